"""Frozen copies of the application's models at earlier schema versions, for the compatibility gate."""
