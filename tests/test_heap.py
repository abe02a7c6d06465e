"""tasks/heap.py: the collector's thresholds while loads run, and after them."""

from __future__ import annotations

import gc
import threading

import pytest

from tasks import heap


def test_a_load_collects_in_larger_batches_and_gives_the_thresholds_back_even_when_it_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), heap.settled():
        assert gc.get_threshold() == (heap.THRESHOLD, *before[1:])
        assert gc.isenabled()  # cycles are still collected
        raise RuntimeError("the load failed")
    assert gc.get_threshold() == before


def test_overlapping_loads_give_the_thresholds_back_when_the_last_one_ends() -> None:
    before = gc.get_threshold()
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[tuple[int, ...]] = []

    def second() -> None:
        first_in.wait(10)
        with heap.settled():
            pass
        seen.append(gc.get_threshold())  # the first load still runs
        second_done.set()

    t = threading.Thread(target=second)
    t.start()
    with heap.settled():
        first_in.set()
        second_done.wait(10)  # bounded: a failing thread must not hang the suite
    t.join()
    assert seen == [(heap.THRESHOLD, *before[1:])]
    assert gc.get_threshold() == before
