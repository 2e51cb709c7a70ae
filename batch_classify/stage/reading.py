"""Reading image files: whole-file reads with a deadline each, and the circuit breaker over them.

Every image read has a deadline (``read_timeout``): a read that takes longer is that image's
read failure, never a hang. Storage that cannot be reached at all is not retried image by image:
after ``UNREACHABLE_READS_TO_TRIP`` consecutive reads that failed to connect or timed out, the
stage stops with :class:`EndpointUnreachable` (a circuit breaker).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import queue
import threading

import numpy as np
from fsspec.asyn import AsyncFileSystem, sync

from batch_classify.errors import BatchClassifyError
from batch_classify.storage import (
    DEFAULT_READ_TIMEOUT,
    READ_CONCURRENCY,
    StorageOptions,
    describe_endpoint,
    filesystem,
    is_connection_error,
)

log = logging.getLogger(__name__)

#: Consecutive image reads that failed to connect or timed out after which the stage stops
#: (:class:`EndpointUnreachable`). 20: twice the reads one S3 reading task has in flight at once
#: (``READ_CONCURRENCY``), so one burst of dropped pooled connections does not trip it, and well
#: under one batch (64 on the CPU, 256 on a GPU), so a dead endpoint stops the stage at its first
#: output batch instead of failing every image in turn (285 s for 400 images before).
UNREACHABLE_READS_TO_TRIP = 20


class ReadTimedOut(BatchClassifyError, TimeoutError):
    """An image read that did not finish within the read timeout; it was abandoned.

    Attributes:
        seconds: the read timeout, seconds.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the read took longer than the read timeout of {seconds:g} s (--read-timeout); abandoned")
        self.seconds = seconds


class ReadSkipped(BatchClassifyError, ConnectionError):
    """An image not read because the ``UNREACHABLE_READS_TO_TRIP`` reads before it in its batch
    failed to connect or timed out: the storage is down, and trying each remaining image would
    only repeat the wait."""

    def __init__(self, count: int, last: BaseException) -> None:
        super().__init__(f"not read: the {count} reads before it failed to connect or timed out (the last: "
                         f"{type(last).__name__}: {last})")


class _Streak:
    """Consecutive unreachable reads within one batch, in the order they end."""

    def __init__(self) -> None:
        self.count = 0
        self.last: BaseException | None = None

    def add(self, result: bytes | BaseException) -> None:
        if isinstance(result, BaseException) and unreachable(result):
            self.count += 1
            self.last = result
        else:
            self.count = 0

    @property
    def tripped(self) -> bool:
        return self.count >= UNREACHABLE_READS_TO_TRIP

    def skipped(self) -> ReadSkipped:
        return ReadSkipped(self.count, self.last)


class EndpointUnreachable(BatchClassifyError, RuntimeError):
    """The storage the images are read from cannot be reached: ``UNREACHABLE_READS_TO_TRIP``
    consecutive reads failed to connect or timed out. The stage stopped; nothing was committed.

    Attributes:
        endpoint: the storage, named (``S3 endpoint http://host:port``, ``the file system holding …``).
    """

    def __init__(self, message: str, *, endpoint: str) -> None:
        super().__init__(message)
        self.endpoint = endpoint

    def __reduce__(self):  # picklable with its keyword argument (Ray, Prefect results)
        return (_endpoint_unreachable, (str(self), self.endpoint))


def _endpoint_unreachable(message: str, endpoint: str) -> EndpointUnreachable:
    return EndpointUnreachable(message, endpoint=endpoint)


#: The prefix of the input columns that decoding and the model actors pass through untouched, to the
#: staged files' writer (``listed:content_id``, ``listed:<partition key>``).
CARRIED = "listed:"


def carried(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns of ``batch`` that ride through the stage to its writer (named ``listed:…``)."""
    return {k: v for k, v in batch.items() if k.startswith(CARRIED)}


class ReadBreaker:
    """The circuit breaker over image reads: counts consecutive rows whose read could not reach
    the storage (``unreachable`` set by :func:`decode_batch`), in the order the rows are seen. Any
    other row resets the count: an image read, or a read answered with an error about that one
    file (missing, access denied), or a decode or inference failure (the read worked).

    Args:
        storage: names the endpoint in the error.
        trip_after: consecutive unreachable reads that trip it.
    """

    def __init__(self, storage: StorageOptions, trip_after: int = UNREACHABLE_READS_TO_TRIP) -> None:
        self.storage, self.trip_after = storage, trip_after
        self.consecutive = 0

    def observe(self, batch: dict[str, np.ndarray]) -> None:
        """Count the rows of one output batch.

        Raises:
            EndpointUnreachable: the count reached ``trip_after``; the message names the endpoint,
                the count and the last error.
        """
        flags = batch.get("unreachable")
        if flags is None:
            return
        for i, flag in enumerate(flags):
            if not flag:
                self.consecutive = 0
                continue
            self.consecutive += 1
            if self.consecutive >= self.trip_after:
                path = str(batch["path"][i])
                endpoint = describe_endpoint(path, self.storage)
                raise EndpointUnreachable(
                    f"{endpoint} is unreachable: {self.consecutive} consecutive image reads failed to connect or "
                    f"timed out (the last: {path}: {batch['error'][i]}); the stage stopped",
                    endpoint=endpoint,
                )


def unreachable(err: BaseException) -> bool:
    """A read that failed to connect or timed out (ours, botocore's, a socket's): it says nothing
    about the file, only that the storage did not answer."""
    from botocore.exceptions import ReadTimeoutError

    return isinstance(err, (TimeoutError, asyncio.TimeoutError, ReadTimeoutError)) or is_connection_error(err)


def read_many(
    paths: list[str], storage: StorageOptions, *, read_timeout: float = DEFAULT_READ_TIMEOUT
) -> dict[str, bytes | BaseException]:
    """Read several files, each path taken literally (``photo [1].jpg`` is no glob pattern).

    Each read gets ``read_timeout`` seconds from its first request to its last byte, retries
    included; a read that takes longer becomes :class:`ReadTimedOut`, never a hang. Once
    ``UNREACHABLE_READS_TO_TRIP`` reads in a row (in the order they end) failed to connect or timed
    out, the files not yet started are not tried: each gets :class:`ReadSkipped`.

    - S3 (any async fsspec filesystem): ``READ_CONCURRENCY`` whole-file GETs in flight at once, each
      under an asyncio deadline that cancels its request, on a client with matching botocore
      timeouts (:func:`batch_classify.storage.filesystem`); the batch as a whole also has a deadline
      (``read_timeout`` × its rounds of ``READ_CONCURRENCY``, plus one).
    - Local files: read one after the other in a daemon thread. A read that blocks in the kernel (a
      hung NFS server) cannot be interrupted: past the deadline its thread is abandoned (it ends
      when the read returns, if ever) and the rest are read in a new thread.

    Returns:
        path → bytes, or the exception that reading it raised (:class:`ReadTimedOut` past the deadline).
    """
    if not paths:
        return {}
    fs, _ = filesystem(paths[0], storage, read_timeout=read_timeout)
    stripped = [fs._strip_protocol(p) for p in paths]
    if isinstance(fs, AsyncFileSystem):
        got = _read_async(fs, stripped, read_timeout)
    else:
        got = _read_in_thread(fs, stripped, read_timeout)
    return dict(zip(paths, got, strict=True))


def _read_async(fs: AsyncFileSystem, paths: list[str], timeout: float) -> list[bytes | BaseException]:
    # One GET per file: s3fs otherwise asks for the size first (a HEAD) to split large files.
    extra = {"max_concurrency": 1} if "max_concurrency" in inspect.signature(fs._cat_file).parameters else {}

    streak = _Streak()

    async def one(gate: asyncio.Semaphore, path: str) -> bytes | BaseException:
        async with gate:  # the deadline starts when the read does, not while it waits for a connection
            if streak.tripped:
                return streak.skipped()
            try:
                got = await asyncio.wait_for(fs._cat_file(path, **extra), timeout)
            except asyncio.TimeoutError:
                got = ReadTimedOut(timeout)
            except Exception as err:  # noqa: BLE001 - this file's failure, recorded
                got = err
            streak.add(got)
            return got

    async def gather() -> list[bytes | BaseException]:
        gate = asyncio.Semaphore(READ_CONCURRENCY)
        return await asyncio.gather(*(one(gate, p) for p in paths))

    rounds = math.ceil(len(paths) / READ_CONCURRENCY)
    try:
        return sync(fs.loop, gather, timeout=timeout * (rounds + 1))
    except Exception as err:  # noqa: BLE001 - the batch's deadline, or a failure of the whole call: each file's
        return [ReadTimedOut(timeout) if isinstance(err, TimeoutError | asyncio.TimeoutError) else err] * len(paths)


def _read_in_thread(fs, paths: list[str], timeout: float) -> list[bytes | BaseException]:
    results: list[bytes | BaseException | None] = [None] * len(paths)
    streak = _Streak()
    next_i = 0
    while next_i < len(paths) and not streak.tripped:
        done: queue.SimpleQueue = queue.SimpleQueue()
        abandoned = threading.Event()

        def work(first: int = next_i, done: queue.SimpleQueue = done, abandoned: threading.Event = abandoned) -> None:
            for i in range(first, len(paths)):
                if abandoned.is_set():
                    return
                try:
                    data: bytes | BaseException = fs.cat_file(paths[i])
                except Exception as err:  # noqa: BLE001 - this file's failure, recorded
                    data = err
                done.put((i, data))

        threading.Thread(target=work, name="batch-classify-read", daemon=True).start()
        while next_i < len(paths):
            try:
                i, data = done.get(timeout=timeout)  # the worker starts file next_i as it hands back the one before
            except queue.Empty:
                abandoned.set()
                log.warning("reading %s took longer than %g s; abandoned (its thread stays blocked)", paths[next_i], timeout)
                results[next_i] = ReadTimedOut(timeout)
                streak.add(results[next_i])
                next_i += 1
                break
            results[i] = data
            streak.add(data)
            next_i = i + 1
            if streak.tripped:
                abandoned.set()
                break
    for i in range(next_i, len(paths)):
        results[i] = streak.skipped()
    return results


def read_rows(
    paths: list[str], storage: StorageOptions, *, read_timeout: float = DEFAULT_READ_TIMEOUT
) -> tuple[list[bytes | None], np.ndarray, np.ndarray, np.ndarray]:
    """Read a batch's files (:func:`read_many`) and record the reads that failed, row by row.

    Returns:
        ``data`` (bytes, None where the read failed), ``stage`` and ``error`` object [N] (``"read"`` and
        the exception where it failed, ``""`` elsewhere), ``unreachable`` bool [N] (the read failed to
        connect or timed out: what :class:`ReadBreaker` counts).
    """
    n = len(paths)
    stage = np.full(n, "", dtype=object)
    error = np.full(n, "", dtype=object)
    unreachable_ = np.zeros(n, dtype=bool)
    contents = read_many(paths, storage, read_timeout=read_timeout)
    data: list[bytes | None] = []
    for i, path in enumerate(paths):
        got = contents[path]
        if isinstance(got, BaseException):
            stage[i], error[i] = "read", f"{type(got).__name__}: {got}"
            unreachable_[i] = unreachable(got)
            got = None
        data.append(got)
    return data, stage, error, unreachable_
