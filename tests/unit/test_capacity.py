"""The stage's watch over a cluster that lost what its plan needs (issue 27 item 10): the arithmetic of
what a plan needs, and :func:`watched` on plain iterators, with short waits."""

from __future__ import annotations

import queue
import signal
import threading
import time

import pytest

from batch_classify.stage.capacity import WAKE, CapacityLost, CapacityWatch
from batch_classify.errors import PermanentError
from batch_classify.stage.plan import ClusterPlan, plan_cluster


def test_a_plan_needs_its_actors_and_one_decoding_task():
    two_cpus = plan_cluster({"CPU": 2.0})  # the loopback cluster's: 1 actor of 1 CPU, decoding 1 CPU
    assert two_cpus.needs() == {"CPU": 2.0, "GPU": 0.0}
    assert two_cpus.shortfall({"CPU": 2.0}) is None
    message = two_cpus.shortfall({"CPU": 1.0})
    assert message == ("the Ray cluster has 1 CPU and 0 GPU now; the stage's plan needs 2 CPU and 0 GPU "
                       "(model actors: 1 × 1 CPU and 0 GPU; decoding: 1 CPU)")
    assert plan_cluster({"CPU": 1.0}).shortfall({"CPU": 1.0}) is None  # what a retry plans on what is left
    gpus = ClusterPlan("cuda", 8, 0.25, 1, cpus_per_actor=0.0)
    assert gpus.needs() == {"CPU": 1.0, "GPU": 2.0}
    assert gpus.shortfall({"CPU": 16.0, "GPU": 2.0}) is None
    assert "has 16 CPU and 1 GPU now" in gpus.shortfall({"CPU": 16.0, "GPU": 1.0})


def _stage(watch: CapacityWatch, *, batches: int, every: float, stall: float = 0.0) -> list[int]:
    """A stage's loop: ``batches`` batches ``every`` seconds apart, then a stall of ``stall`` seconds
    (waiting in small sleeps, as Ray Data's iterator does), then one more batch."""
    got = []
    try:
        with watch:
            for i in range(batches):
                time.sleep(every)
                watch.output_came()
                got.append(i)
            end = time.monotonic() + stall
            while time.monotonic() < end:
                time.sleep(0.01)
            got.append(batches)
    except CapacityLost:
        raise CapacityLost(watch.reason) from None
    return got


def test_a_stall_on_a_cluster_short_of_the_plan_stops_the_loop_after_the_wait():
    watch = CapacityWatch(short_of=lambda: "the Ray cluster has 1 CPU", wait=0.3, look_every=0.05)
    started = time.monotonic()
    with pytest.raises(CapacityLost) as raised:
        _stage(watch, batches=2, every=0.01, stall=30)
    assert 0.3 <= time.monotonic() - started < 5
    assert str(raised.value).startswith("the Ray cluster has 1 CPU, and no output came for 0 s (a node lost?); stopping")
    assert not isinstance(raised.value, PermanentError)  # the infer task's retry plans again
    time.sleep(0.2)  # nothing more is raised in this thread later


def test_a_main_thread_waiting_on_a_lock_is_woken():
    """Ray Data's iterator waits on a queue, in a lock's acquire, where no Python code runs: the watch
    wakes the main thread with a signal (pytest runs tests in the main thread)."""
    assert threading.current_thread() is threading.main_thread()
    signal.signal(WAKE, signal.SIG_DFL)
    watch = CapacityWatch(short_of=lambda: "short", wait=0.2, look_every=0.05)
    started = time.monotonic()
    with pytest.raises(CapacityLost):
        try:
            with watch:
                queue.Queue().get(timeout=30)
        except CapacityLost:
            raise CapacityLost(watch.reason) from None
    assert time.monotonic() - started < 5
    assert callable(signal.getsignal(WAKE))  # left in place once fired: the signal may be on its way

    signal.signal(WAKE, signal.SIG_DFL)
    with CapacityWatch(short_of=lambda: None, wait=0.05, look_every=0.01):
        assert callable(signal.getsignal(WAKE))
        time.sleep(0.2)
    assert signal.getsignal(WAKE) is signal.SIG_DFL  # given back by a watch that did not fire


def test_a_stall_on_a_cluster_that_still_holds_the_plan_waits():
    looks = []

    def holds():
        looks.append(time.monotonic())
        return None

    assert _stage(CapacityWatch(short_of=holds, wait=0.1, look_every=0.02), batches=1, every=0.0, stall=0.5) == [0, 1]
    assert len(looks) >= 3


def test_output_that_keeps_coming_is_never_stopped_by_a_short_cluster():
    looks = []
    watch = CapacityWatch(short_of=lambda: looks.append(1) or "short", wait=0.2, look_every=0.02)
    assert _stage(watch, batches=20, every=0.05) == list(range(21))
    assert not looks  # never asked: output kept coming within the wait


def test_a_look_that_fails_does_not_stop_the_stage():
    def broken():
        raise ConnectionError("GCS away")

    assert _stage(CapacityWatch(short_of=broken, wait=0.05, look_every=0.02), batches=1, every=0.0, stall=0.3) == [0, 1]


def test_leaving_the_watch_as_it_fires_leaves_nothing_pending():
    """The watch fires just as the loop ends: whatever is pending is cleared on the way out, and
    whatever was raised already is caught around it; nothing reaches the code after it."""
    for _ in range(20):
        watch = CapacityWatch(short_of=lambda: "short", wait=0.0, look_every=0.001)
        try:
            with watch:
                time.sleep(0.002)
        except CapacityLost:
            pass
        for _ in range(10_000):  # bytecodes after the watch: a pending exception would surface here
            pass
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name == "capacity-watch" and t.is_alive()]
