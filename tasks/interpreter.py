"""How a run tunes the interpreter while records stream: the one place that does.

The cyclic garbage collector. Python starts a collection every 700 container objects made (more made
than freed), and each one that reaches the older generations walks them too. A load makes and frees
millions of them (every record is a dict, every chunk thousands of lists and tuples) while a heap that
none of this can free stays alive beside it: Prefect's, pandas' and SQLAlchemy's modules (430,000
objects) and the run's files (100,000 for a user base). At 700 the collector runs thousands of times
a chunk and keeps promoting the records of the three chunks in flight into the old generation, whose
collections then walk the whole heap.

The GIL's switch interval. The load's main thread computes without pause while its writer threads
talk to PostgreSQL: each time a writer's socket wait ends (a statement answered, a megabyte of COPY
flushed, a dozen times a chunk) it asks for the GIL back and waits until the main thread lets go,
up to the switch interval, 5 ms by default, while its PostgreSQL backend waits for the next bytes.

- settled(): for the load, a collection every 50,000 objects instead (cycles are still collected,
  just in larger batches, so memory stays bounded). 100,000 files (bench/phase1_fleet.py's), paired
  runs against the default: 0.78 (0.73 to 0.83) of the wall time on PostgreSQL 15, and 0.80 of the
  flow's time (49.9 and 50.8 s against 63.1 and 61.7 s) on the embedded 18; the 1M file 0.95 (0.88
  to 0.99); the same peak RSS. With no collection at all the fleet's load took 26.2 and 27.1 s
  against 33.8 and 34.6 s. Also while a run is prepared (flows/phase1.py prepare_job): its 100,000
  files found and hashed in 1.58 to 1.78 s against 1.89 to 2.10 s, three runs each.
  And a switch interval of SWITCH_INTERVAL instead of 5 ms: the 1M-record file of bench/phase1.py on
  the embedded PostgreSQL 18, four pairs of whole commands: wall 0.94 (0.87 to 0.98), the load
  phase 13.0, 14.8, 13.2 and 16.3 s against 14.8, 15.0, 15.8 and 18.8 s.
- before_exit(): the clean-up at exit collects everything still alive several times while it clears
  the modules: 1.3 s at the end of a 100,000-file re-sync, 0.1 s with the heap frozen first.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLD = 50_000  # container objects made between two collections while settled (a load, a preparation)
SWITCH_INTERVAL = 0.001  # seconds a thread that wants the GIL waits at most, while settled

_lock = threading.Lock()
_held = 0  # settled() blocks open in this process (flows run in threads share the interpreter)
_before = (gc.get_threshold(), sys.getswitchinterval())


@contextmanager
def settled() -> Iterator[None]:
    """Within: the collector runs every THRESHOLD objects made and a thread waits for the GIL at
    most SWITCH_INTERVAL; both are given back when the last settled() block of the process ends."""
    global _held, _before
    with _lock:
        if _held == 0:
            _before = (gc.get_threshold(), sys.getswitchinterval())
            gc.set_threshold(THRESHOLD, *_before[0][1:])
            sys.setswitchinterval(SWITCH_INTERVAL)
        _held += 1
    try:
        yield
    finally:
        with _lock:
            _held -= 1
            if _held == 0:
                gc.set_threshold(*_before[0])
                sys.setswitchinterval(_before[1])


def before_exit() -> None:
    """Freeze the heap out of the collector: the process is ending (what is made after is still collected)."""
    gc.freeze()
