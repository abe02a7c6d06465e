"""The flows: one file per command, each a thin Prefect flow over the plain functions in tasks/.

Started as `python -m flows.<command>`, a command needs Prefect's temporary server; it is spawned
here, before the command's module imports Prefect, pandas and pandera, so the two boot side by side
(flows/orchestrator.py).
"""

import sys

if getattr(sys, "orig_argv", None):
    from flows import orchestrator

    orchestrator.boot_early(sys.orig_argv)
