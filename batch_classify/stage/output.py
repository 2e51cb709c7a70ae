"""What both executors of the stage (Ray Data's, :mod:`batch_classify.stage.inference`; this process's,
:mod:`batch_classify.stage.local`) do with their output, and what they return: :class:`StageOutput` hands
each output batch on, counts it and checks at the end that every input path came out exactly once;
:class:`StageResult` is the count and the timings.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from batch_classify.stage.plan import ClusterPlan
from batch_classify.stage.ray_logs import StageProgress
from batch_classify.stage.reading import ReadBreaker


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


def path_hashes(paths) -> np.ndarray:
    """uint64 [N]: the first 8 bytes of each path's BLAKE2b digest (UTF-8). Two of a million paths share
    one with a probability of about 3e-8 (the birthday bound, n² / 2⁶⁵); the check below then reports a
    duplicate and a missing path, the stage fails, and nothing is committed wrongly."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(str(p).encode(), digest_size=8).digest(), "little") for p in paths),
                       dtype=np.uint64, count=len(paths))


class StageOutput:
    """What both executors do with each output batch, and their check at the end: the batch goes to
    ``on_batch``, its paths are counted, ``progress`` is updated and ``breaker`` sees it.

    The exactly-once check keeps 8 bytes per path (:func:`path_hashes`), not a set of the paths: at a
    million files a set of the output's path strings held about 150 MB in the driver (issue 28 item 3).

    Args:
        records: the stage's input (dicts with ``path``).
        on_batch: gets each output batch (see :class:`Classifier`'s result).
        progress: a :class:`batch_classify.stage.ray_logs.StageProgress`.
        breaker: the read circuit breaker.
    """

    def __init__(self, records: list[dict], on_batch: Callable[[dict[str, np.ndarray]], None],
                 progress: StageProgress, breaker: ReadBreaker) -> None:
        self.records, self.on_batch, self.progress, self.breaker = records, on_batch, progress, breaker
        self._seen: list[np.ndarray] = []  # the output's path hashes, batch by batch
        self.n_out = self.n_failed = self.n_first = 0
        self.first_at = self.last_at = math.nan

    def take(self, batch: dict[str, np.ndarray]) -> None:
        """Hand one output batch on and count it.

        Raises:
            EndpointUnreachable: the breaker tripped (after ``on_batch`` got the batch).
        """
        self._seen.append(path_hashes(batch["path"]))
        self.n_out += len(batch["path"])
        self.n_failed += int(np.count_nonzero(batch["error"] != ""))
        self.on_batch(batch)
        self.progress.update(self.n_out)
        self.breaker.observe(batch)
        self.last_at = time.perf_counter()
        if math.isnan(self.first_at):
            self.first_at, self.n_first = self.last_at, len(batch["path"])

    def result(self, plan: ClusterPlan, start: float) -> StageResult:
        """The stage's counts and timings (``start``: its ``time.perf_counter()``).

        Raises:
            RuntimeError: the output does not hold every input path exactly once.
        """
        seen = np.sort(np.concatenate(self._seen)) if self._seen else np.zeros(0, dtype=np.uint64)
        duplicates = int(np.count_nonzero(seen[1:] == seen[:-1]))
        seen = np.unique(seen)
        expected = np.unique(path_hashes([r["path"] for r in self.records]))
        missing = int(np.setdiff1d(expected, seen, assume_unique=True).size)
        unexpected = int(np.setdiff1d(seen, expected, assume_unique=True).size)
        if missing or duplicates or unexpected:
            raise RuntimeError(
                f"inference output does not match its input: {missing} missing, {duplicates} duplicated, "
                f"{unexpected} unexpected paths"
            )
        first_at, last_at = self.first_at, self.last_at
        return StageResult(
            n_input=len(self.records),
            n_predicted=self.n_out - self.n_failed,
            n_failed=self.n_failed,
            wall_seconds=time.perf_counter() - start,
            plan=plan,
            first_batch_seconds=first_at - start,
            steady_images_per_second=(self.n_out - self.n_first) / (last_at - first_at) if last_at > first_at else math.nan,
        )
