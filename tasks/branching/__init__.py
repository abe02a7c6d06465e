"""Database branches: copies of a database at a point in time, for rehearsals, checkpoints, rollback
and recovery. `base.py` is the interface; `local.py` (databases on one PostgreSQL server) and
`neon.py` (Neon's API v2) implement it; `provider()` picks one from configuration."""

from __future__ import annotations

from tasks.branching.base import Branch, BranchProvider, checkpoint_name, checkpoint_prefix, provider

__all__ = ["Branch", "BranchProvider", "checkpoint_name", "checkpoint_prefix", "provider"]
