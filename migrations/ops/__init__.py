"""Schema-change operations, one module each, registered with Alembic on import (every module of
this package is imported here, so a new one is a new file and nothing else)."""

import importlib
import pkgutil

from migrations.ops.base import Backfill, OnlineOperation
from migrations.ops.revision import OnlineUpgrade, declared, online

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Backfill", "OnlineOperation", "OnlineUpgrade", "declared", "online"]
