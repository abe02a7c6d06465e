"""tasks/interpreter.py: the collector's thresholds while loads run, and after them."""

from __future__ import annotations

import gc
import sys
import threading

import pytest

from tasks import interpreter


def test_a_load_collects_in_larger_batches_and_gives_the_thresholds_back_even_when_it_fails() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    with pytest.raises(RuntimeError), interpreter.settled():
        assert gc.get_threshold() == (interpreter.THRESHOLD, *before[1:])
        assert gc.isenabled()  # cycles are still collected
        assert sys.getswitchinterval() == pytest.approx(interpreter.SWITCH_INTERVAL)
        raise RuntimeError("the load failed")
    assert gc.get_threshold() == before
    assert sys.getswitchinterval() == interval


def test_overlapping_loads_give_the_thresholds_back_when_the_last_one_ends() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[tuple[int, ...]] = []

    def second() -> None:
        first_in.wait(10)
        with interpreter.settled():
            pass
        seen.append(gc.get_threshold())  # the first load still runs
        second_done.set()

    t = threading.Thread(target=second)
    t.start()
    with interpreter.settled():
        first_in.set()
        second_done.wait(10)  # bounded: a failing thread must not hang the suite
    t.join()
    assert seen == [(interpreter.THRESHOLD, *before[1:])]
    assert gc.get_threshold() == before
    assert sys.getswitchinterval() == interval
