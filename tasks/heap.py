"""How a run treats Python's cyclic garbage collector: the one place that tunes it.

Python starts a collection every 700 container objects made (more made than freed), and each one
that reaches the older generations walks them too. A load makes and frees millions of them (every
record is a dict, every chunk thousands of lists and tuples) while a heap that none of this can free
stays alive beside it: Prefect's, pandas' and SQLAlchemy's modules (430,000 objects) and the run's
files (100,000 for a user base). At 700 the collector runs thousands of times a chunk and keeps
promoting the records of the three chunks in flight into the old generation, whose collections then
walk the whole heap.

- settled(): for the load, a collection every 50,000 objects instead (cycles are still collected,
  just in larger batches, so memory stays bounded). 100,000 files (bench/phase1_fleet.py's), paired
  runs against the default: 0.78 (0.73 to 0.83) of the wall time on PostgreSQL 15, and 0.80 of the
  flow's time (49.9 and 50.8 s against 63.1 and 61.7 s) on the embedded 18; the 1M file 0.95 (0.88
  to 0.99); the same peak RSS. With no collection at all the fleet's load took 26.2 and 27.1 s
  against 33.8 and 34.6 s. Also while a run is prepared (flows/phase1.py prepare_job): its 100,000
  files found and hashed in 1.58 to 1.78 s against 1.89 to 2.10 s, three runs each.
- before_exit(): the clean-up at exit collects everything still alive several times while it clears
  the modules: 1.3 s at the end of a 100,000-file re-sync, 0.1 s with the heap frozen first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLD = 50_000  # container objects made between two collections while settled (a load, a preparation)

_lock = threading.Lock()
_held = 0  # settled() blocks open in this process (flows run in threads share the collector)
_before = gc.get_threshold()


@contextmanager
def settled() -> Iterator[None]:
    """Within: the collector runs every THRESHOLD objects made; its thresholds are given back when
    the last settled() block of the process ends."""
    global _held, _before
    with _lock:
        if _held == 0:
            _before = gc.get_threshold()
            gc.set_threshold(THRESHOLD, *_before[1:])
        _held += 1
    try:
        yield
    finally:
        with _lock:
            _held -= 1
            if _held == 0:
                gc.set_threshold(*_before)


def before_exit() -> None:
    """Freeze the heap out of the collector: the process is ending (what is made after is still collected)."""
    gc.freeze()
