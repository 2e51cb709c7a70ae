"""What both executors of the stage (Ray Data's, :mod:`batch_classify.stage.inference`; this process's,
:mod:`batch_classify.stage.local`) do with their output, and what they return: :class:`StageOutput` hands
each output batch on, counts it and checks at the end that every input path came out exactly once;
:class:`StageResult` is the count and the timings.

Where Ray Data's workers write the staged files themselves (issue 28 item 3), the driver sees one small
summary per written file instead of the rows: :class:`WrittenOutput` counts those, and its exactly-once
check compares a :class:`PathDigest` (a count and two sums of 64-bit path hashes) of the input with the
one the writers return, so the driver keeps no hash per path. The input's extra columns (the listed
facts the writers need: content identity, partitions) ride through decoding and the model actors under
names that start with :data:`batch_classify.stage.reading.CARRIED` (:func:`~batch_classify.stage.reading.carried`).
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


_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class PathDigest:
    """A multiset of paths in 24 bytes: how many, and the sums (mod 2⁶⁴) of two independent 64-bit hashes
    of each (the two halves of its 16-byte BLAKE2b digest). Two multisets that differ (a path missing,
    duplicated, or one not in the input) have equal digests with a probability of about 2⁻¹²⁸ per
    difference; nothing per path is kept, so the driver's check does not grow with the input.
    Digests add (:meth:`__add__`): the writers' per-file digests sum to the stage's output's.
    """

    count: int = 0
    sum_a: int = 0
    sum_b: int = 0

    @classmethod
    def of(cls, paths) -> "PathDigest":
        """The digest of ``paths`` (an iterable of str; UTF-8 hashed)."""
        count = a = b = 0
        for p in paths:
            d = hashlib.blake2b(str(p).encode(), digest_size=16).digest()
            count, a, b = count + 1, a + int.from_bytes(d[:8], "little"), b + int.from_bytes(d[8:], "little")
        return cls(count, a & _MASK, b & _MASK)

    def __add__(self, other: "PathDigest") -> "PathDigest":
        return PathDigest(self.count + other.count, (self.sum_a + other.sum_a) & _MASK, (self.sum_b + other.sum_b) & _MASK)


class _Counted:
    """What both outputs count: images out and failed, and when the first and the last came (for the
    :class:`StageResult`'s timings)."""

    def __init__(self, progress: StageProgress, breaker: ReadBreaker) -> None:
        self.progress, self.breaker = progress, breaker
        self.n_out = self.n_failed = self.n_first = 0
        self.first_at = self.last_at = math.nan

    def _count(self, n: int, n_failed: int, seen: dict[str, np.ndarray]) -> None:
        """Count ``n`` images (``n_failed`` of them failed), update the progress, show the breaker ``seen``.

        Raises:
            EndpointUnreachable: the breaker tripped.
        """
        self.n_out += n
        self.n_failed += n_failed
        self.progress.update(self.n_out)
        self.breaker.observe(seen)
        self.last_at = time.perf_counter()
        if math.isnan(self.first_at):
            self.first_at, self.n_first = self.last_at, n

    def _result(self, plan: ClusterPlan, start: float, n_input: int) -> StageResult:
        first_at, last_at = self.first_at, self.last_at
        return StageResult(
            n_input=n_input,
            n_predicted=self.n_out - self.n_failed,
            n_failed=self.n_failed,
            wall_seconds=time.perf_counter() - start,
            plan=plan,
            first_batch_seconds=first_at - start,
            steady_images_per_second=(self.n_out - self.n_first) / (last_at - first_at) if last_at > first_at else math.nan,
        )


class StageOutput(_Counted):
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
        super().__init__(progress, breaker)
        self.records, self.on_batch = records, on_batch
        self._seen: list[np.ndarray] = []  # the output's path hashes, batch by batch

    def take(self, batch: dict[str, np.ndarray]) -> None:
        """Hand one output batch on and count it.

        Raises:
            EndpointUnreachable: the breaker tripped (after ``on_batch`` got the batch).
        """
        self._seen.append(path_hashes(batch["path"]))
        self.on_batch(batch)
        self._count(len(batch["path"]), int(np.count_nonzero(batch["error"] != "")), batch)

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
        return self._result(plan, start, len(self.records))


#: The columns of a written file's summary (what :class:`WrittenOutput` takes), each an array of
#: K ≥ 1 rows: the counts and files in row 0 (zero and ``""`` in the others), and the breaker's view of
#: the file's rows in order, with each run of reachable rows folded into one (``unreachable`` False):
#: ``unreachable`` bool, ``path`` and ``error`` object (``""`` where reachable). Ray Data may hand the driver
#: several summaries concatenated (a task's outputs joined into one block): every reader sums the columns.
SUMMARY_COLUMNS = ("n_rows", "n_failed", "file", "failures_file", "digest_count", "digest_a", "digest_b",
                   "unreachable", "path", "error")


class WrittenOutput(_Counted):
    """What the driver does with the summaries of files Ray Data's workers wrote (one per file, see
    :data:`SUMMARY_COLUMNS`): hand each to ``on_written``, count its rows, update ``progress``, show the
    breaker its reads; at the end check the summed :class:`PathDigest` against ``expected``.

    Args:
        expected: the digest of the stage's input paths.
        on_written: gets each summary (the staging writer records the files).
    """

    def __init__(self, expected: PathDigest, on_written: Callable[[dict[str, np.ndarray]], None],
                 progress: StageProgress, breaker: ReadBreaker) -> None:
        super().__init__(progress, breaker)
        self.expected, self.on_written = expected, on_written
        self.digest = PathDigest()

    def take(self, summary: dict[str, np.ndarray]) -> None:
        """Record one written file's summary.

        Raises:
            EndpointUnreachable: the breaker tripped (after ``on_written`` got the summary).
        """
        self.digest = self.digest + PathDigest(int(np.sum(summary["digest_count"])),
                                               int(np.sum(summary["digest_a"].astype(object))) & _MASK,
                                               int(np.sum(summary["digest_b"].astype(object))) & _MASK)
        self.on_written(summary)
        self._count(int(np.sum(summary["n_rows"])), int(np.sum(summary["n_failed"])), summary)

    def result(self, plan: ClusterPlan, start: float) -> StageResult:
        """The stage's counts and timings (``start``: its ``time.perf_counter()``).

        Raises:
            RuntimeError: the written paths are not the input's, each exactly once.
        """
        if self.digest != self.expected:
            raise RuntimeError(
                f"inference output does not match its input: {self.expected.count} paths in, {self.digest.count} "
                "written, and the paths' digests differ (a path missing, duplicated or unexpected)"
                if self.digest.count == self.expected.count else
                f"inference output does not match its input: {self.expected.count} paths in, {self.digest.count} written"
            )
        return self._result(plan, start, self.expected.count)


def written_summary(batch: dict[str, np.ndarray], *, file: str, failures_file: str) -> dict[str, np.ndarray]:
    """The summary (:data:`SUMMARY_COLUMNS`) of one output batch that a worker wrote to ``file`` (its
    predicted rows; ``""`` for none) and ``failures_file`` (its failed rows; ``""`` for none)."""
    paths, error = batch["path"], np.asarray(batch["error"], dtype=object)
    flags = np.asarray(batch.get("unreachable", np.zeros(len(paths), dtype=bool)), dtype=bool)
    keep = flags | np.concatenate([[True], flags[:-1]]) if len(flags) else flags  # first of each reachable run
    rows = np.flatnonzero(keep) if len(flags) else np.zeros(1, dtype=np.int64)
    k = max(1, len(rows))
    digest = PathDigest.of(paths)
    out = {
        "n_rows": np.zeros(k, np.int64), "n_failed": np.zeros(k, np.int64),
        "file": np.full(k, "", dtype=object), "failures_file": np.full(k, "", dtype=object),
        "digest_count": np.zeros(k, np.int64), "digest_a": np.zeros(k, np.uint64), "digest_b": np.zeros(k, np.uint64),
        "unreachable": np.zeros(k, bool), "path": np.full(k, "", dtype=object), "error": np.full(k, "", dtype=object),
    }
    out["n_rows"][0], out["n_failed"][0] = len(paths), int(np.count_nonzero(error != ""))
    out["file"][0], out["failures_file"][0] = file, failures_file
    out["digest_count"][0], out["digest_a"][0], out["digest_b"][0] = digest.count, digest.sum_a, digest.sum_b
    if len(flags):
        out["unreachable"][:] = flags[rows]
        hit = rows[flags[rows]]
        out["path"][flags[rows]] = [str(paths[i]) for i in hit]
        out["error"][flags[rows]] = [str(error[i]) for i in hit]
    return out
