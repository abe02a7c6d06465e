"""How a command's process starts: `python -m flows.<command>` imports this package first.

Two things happen before the command's module imports Prefect, pandas and pandera (about a second):
- the temporary Prefect server is spawned, so it boots side by side with those imports
  (flows/orchestrator.py);
- the cyclic garbage collector is paused. Imports create hundreds of thousands of objects that live
  as long as the process, and collecting while they are made costs a fifth of the import time for
  almost nothing found. Once the imports are done (imports_done(), called before the command's
  main), they are frozen: later full collections skip them. Collection then resumes with a larger
  young generation, because the pipeline allocates records by the thousand and frees them by
  reference counting, and default thresholds spend about 6% of its time collecting.
Neither happens when the package is merely imported (tests, a Prefect worker).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

from flows import orchestrator

# Young-generation threshold after start-up (Python's default is 700); the older ones keep theirs.
YOUNG_THRESHOLD = 10_000
_paused = False


def begin(argv: Sequence[str] | None) -> None:
    """At the top of the flows package: argv is sys.orig_argv (None: a command, whatever argv)."""
    global _paused
    if (argv is None or orchestrator.command_of(argv) is not None) and gc.isenabled():
        gc.disable()
        _paused = True
    orchestrator.boot_early(argv)


def imports_done() -> None:
    """The command's imports are done: freeze what they made and resume collecting."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
        gc.enable()
