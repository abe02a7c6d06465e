"""The SQLModel tables shared by Alembic, the flows and the tests."""

from models.tables import MigrationCheckpoint, MigrationRun, QuarantineRecord, Task, User, metadata

__all__ = ["MigrationCheckpoint", "MigrationRun", "QuarantineRecord", "Task", "User", "metadata"]
