"""The flows: one file per command, each a thin Prefect flow over the plain functions in tasks/.

Importing this package (or a flow module) starts nothing: a command's start-up work, the temporary
Prefect server among it (flows/orchestrator.py), happens in its main."""
