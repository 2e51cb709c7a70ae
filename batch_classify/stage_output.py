"""What both executors of the stage (Ray Data's, :mod:`batch_classify.inference`; this process's,
:mod:`batch_classify.local_stage`) do with their output, and what they return: :class:`StageOutput` hands
each output batch on, counts it and checks at the end that every input path came out exactly once;
:class:`StageResult` is the count and the timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from batch_classify.plan import ClusterPlan
from batch_classify.ray_logs import StageProgress
from batch_classify.reading import ReadBreaker


@dataclass
class StageResult:
    """What the inference stage produced, counted.

    Attributes:
        wall_seconds: the whole stage, actor start-up included, seconds.
        first_batch_seconds: stage start to the first output batch (start-up latency), seconds.
        steady_images_per_second: images after the first batch over the time from the first
            output batch to the last (NaN with fewer than two batches).
    """

    n_input: int
    n_predicted: int
    n_failed: int
    wall_seconds: float
    plan: ClusterPlan
    first_batch_seconds: float = float("nan")
    steady_images_per_second: float = float("nan")


class StageOutput:
    """What both executors do with each output batch, and their check at the end: the batch goes to
    ``on_batch``, its paths are counted, ``progress`` is updated and ``breaker`` sees it.

    Args:
        records: the stage's input (dicts with ``path``).
        on_batch: gets each output batch (see :class:`Classifier`'s result).
        progress: a :class:`batch_classify.ray_logs.StageProgress`.
        breaker: the read circuit breaker.
    """

    def __init__(self, records: list[dict], on_batch: Callable[[dict[str, np.ndarray]], None],
                 progress: StageProgress, breaker: ReadBreaker) -> None:
        self.records, self.on_batch, self.progress, self.breaker = records, on_batch, progress, breaker
        self.seen: set[str] = set()
        self.duplicates = self.n_failed = self.n_first = 0
        self.first_at = self.last_at = math.nan

    def take(self, batch: dict[str, np.ndarray]) -> None:
        """Hand one output batch on and count it.

        Raises:
            EndpointUnreachable: the breaker tripped (after ``on_batch`` got the batch).
        """
        for p in batch["path"]:
            if p in self.seen:
                self.duplicates += 1
            self.seen.add(p)
        self.n_failed += int(np.count_nonzero(batch["error"] != ""))
        self.on_batch(batch)
        self.progress.update(len(self.seen))
        self.breaker.observe(batch)
        self.last_at = time.perf_counter()
        if math.isnan(self.first_at):
            self.first_at, self.n_first = self.last_at, len(batch["path"])

    def result(self, plan: ClusterPlan, start: float) -> StageResult:
        """The stage's counts and timings (``start``: its ``time.perf_counter()``).

        Raises:
            RuntimeError: the output does not hold every input path exactly once.
        """
        seen = self.seen
        expected = {r["path"] for r in self.records}
        missing = expected - seen
        if missing or self.duplicates or seen - expected:
            raise RuntimeError(
                f"inference output does not match its input: {len(missing)} missing, {self.duplicates} duplicated, "
                f"{len(seen - expected)} unexpected paths"
            )
        first_at, last_at = self.first_at, self.last_at
        return StageResult(
            n_input=len(self.records),
            n_predicted=len(seen) - self.n_failed,
            n_failed=self.n_failed,
            wall_seconds=time.perf_counter() - start,
            plan=plan,
            first_batch_seconds=first_at - start,
            steady_images_per_second=(len(seen) - self.n_first) / (last_at - first_at) if last_at > first_at else math.nan,
        )
