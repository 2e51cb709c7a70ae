"""One writer per run id: a lease on ``OUTPUT/RUN_ID/_LEASE``, taken before staging, held to the report.

Two runs given the same ``--output`` and ``--run-id`` would otherwise stage, commit and clean up over
each other (issue 12, case 4: the second commit removed the first's staging, and 1,500 predictions were
lost). The lease makes the second writer stop at once with a line naming the holder.

``_LEASE`` is a small JSON object: ``owner`` (host, process id, and what the caller adds, e.g. the flow
run), ``token`` (unique to this holder), ``acquired_at`` and ``expires_at`` (UTC, ISO 8601). Taking it:

- **S3**: a conditional put (``If-None-Match: *``) creates it only where none exists; renewal, takeover
  and release are conditional on the ETag this holder last wrote or read (``If-Match``), so of two
  writers racing for an expired lease exactly one wins.
- **Local disk**: every change happens under an exclusive ``flock`` of ``_LEASE.lock`` beside it (never
  removed), so reading, deciding and replacing are one step. ``flock`` is per host: on NFS use S3 or one
  host per output.

The holder renews it every ``ttl_seconds / 4`` (a heartbeat thread). A writer that crashed stops
renewing; once ``expires_at`` has passed, the next writer takes the lease over (its staged files stay
for ``--resume``). On the holder's own host a dead holder process is seen at once (its ``pid`` is
gone), so a rerun after ``kill -9`` need not wait for the expiry. Expiry compares wall clocks of different hosts: keep them within a small fraction of
the TTL (NTP does).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from batch_classify.errors import PermanentError
from batch_classify.run.layout import RunLayout
from batch_classify.storage import StorageOptions, filesystem, is_remote_fs

log = logging.getLogger(__name__)

#: How long a lease lasts without renewal, seconds. Five minutes: long enough that a heartbeat
#: (every TTL/4, 75 s) survives a stalled event loop or a slow S3 write, short enough that a crashed
#: writer blocks the next run for at most five minutes (a nightly run takes hours).
LEASE_TTL_SECONDS = 300.0


class LeaseHeld(PermanentError, RuntimeError):
    """Another live writer holds the run id's lease. The message names it and when its lease expires."""


class LeaseLost(PermanentError, RuntimeError):
    """This writer's lease expired and another writer took it over; this writer must not commit."""


@dataclass(frozen=True)
class LeaseRecord:
    """What ``_LEASE`` holds."""

    owner: str
    token: str
    acquired_at: str
    expires_at: str
    host: str = ""
    pid: int = 0

    def expired(self, now: datetime) -> bool:
        """Past ``expires_at``, or held by a process of this host that no longer exists (a writer
        killed with ``kill -9`` need not be waited for)."""
        if datetime.fromisoformat(self.expires_at) <= now:
            return True
        return self.host == socket.gethostname() and self.pid > 0 and not _alive(self.pid)

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, indent=2).encode()

    @classmethod
    def decode(cls, data: bytes) -> "LeaseRecord | None":
        """The record, or None for a file that is not one (a torn write: treated as expired)."""
        try:
            obj = json.loads(data)
            return cls(
                **{k: str(obj[k]) for k in ("owner", "token", "acquired_at", "expires_at")},
                host=str(obj.get("host", "")), pid=int(obj.get("pid", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def default_owner() -> str:
    """``host pid N``: where the writer runs."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class RunLease:
    """The lease of one run id; a context manager that acquires, heartbeats and releases it.

    >>> with RunLease("s3://bucket/out/nightly-2026-11-30", storage, owner="flow run calm-otter"):
    ...     ...  # stage, commit, report

    Args:
        run_uri: ``OUTPUT/RUN_ID``, local or ``s3://``.
        owner: who holds it, as a person reading the refusal should see it; host and pid are prefixed.
        ttl_seconds: lifetime without renewal, seconds (:data:`LEASE_TTL_SECONDS`).

    Raises (from :meth:`acquire` and ``__enter__``):
        LeaseHeld: another writer holds an unexpired lease.
        OSError: storage fails.
    """

    def __init__(
        self, run_uri: str, storage: StorageOptions, *, owner: str = "", ttl_seconds: float = LEASE_TTL_SECONDS
    ) -> None:
        self.run_uri = run_uri
        layout = RunLayout.parse(run_uri)
        self.uri = layout.lease
        self.storage = storage
        self.owner = f"{default_owner()}{', ' + owner if owner else ''}"
        self.ttl_seconds = ttl_seconds
        self.token = uuid.uuid4().hex
        self._fs, self._path = filesystem(self.uri, storage)
        self._lock_path = filesystem(layout.lease_lock, storage)[1]  # local disk only
        self._remote = is_remote_fs(self._fs)
        self._etag: str | None = None
        self._acquired_at: str | None = None
        self._lost: str | None = None
        #: One renewal at a time: the heartbeat and :meth:`check` each put conditional on ``_etag``,
        #: and of two such puts at once one would fail on the ETag the other had just written.
        self._renewing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the record ------------------------------------------------------------------------------
    def _record(self, now: datetime) -> LeaseRecord:
        return LeaseRecord(
            owner=self.owner, token=self.token, acquired_at=self._acquired_at or now.isoformat(),
            expires_at=(now + timedelta(seconds=self.ttl_seconds)).isoformat(), host=socket.gethostname(),
            pid=os.getpid(),
        )

    def _held_message(self, other: LeaseRecord) -> str:
        return (
            f"run id {self.run_uri} is being written by {other.owner} (lease taken {other.acquired_at}, "
            f"expires {other.expires_at} unless renewed); wait for that run to end, or choose another --run-id"
        )

    # -- S3 ----------------------------------------------------------------------------------------
    def _s3_read(self) -> tuple[LeaseRecord | None, str] | None:
        """(record, ETag) of ``_LEASE`` as one version, or None when there is none."""
        for _ in range(5):
            try:
                before = self._fs.info(self._path, refresh=True)["ETag"]
                data = self._fs.cat_file(self._path)
                after = self._fs.info(self._path, refresh=True)["ETag"]
            except FileNotFoundError:
                return None
            if before == after:
                return LeaseRecord.decode(data), after
        raise OSError(f"{self.uri} keeps changing while it is read")

    def _s3_put(self, record: LeaseRecord, **condition: str) -> None:
        bucket, key, _ = self._fs.split_path(self._path)
        out = self._fs.call_s3("put_object", Bucket=bucket, Key=key, Body=record.encode(), **condition)
        self._etag = out["ETag"]

    def _s3_acquire(self, now: datetime) -> None:
        try:
            self._s3_put(self._record(now), IfNoneMatch="*")
            return
        except FileExistsError:
            pass
        current = self._s3_read()
        if current is None:  # released between the two calls
            self._s3_put(self._record(now), IfNoneMatch="*")
            return
        other, etag = current
        if other is not None and not other.expired(now):
            raise LeaseHeld(self._held_message(other))
        try:
            self._s3_put(self._record(now), IfMatch=etag)  # take over; a racing writer's put fails
        except OSError as exc:
            if _precondition_failed(exc):
                current = self._s3_read()
                raise LeaseHeld(self._held_message(current[0])) if current and current[0] else exc
            raise
        log.warning("took over the expired lease of %s from %s", self.run_uri, other.owner if other else "a torn write")

    def _s3_renew(self, now: datetime) -> None:
        try:
            self._s3_put(self._record(now), IfMatch=self._etag or "")
        except OSError as exc:  # FileNotFoundError too: the lease was released or removed under us
            if _precondition_failed(exc) or isinstance(exc, FileNotFoundError):
                raise LeaseLost(self._lost_message()) from exc
            raise

    def _s3_release(self) -> None:
        bucket, key, _ = self._fs.split_path(self._path)
        with contextlib.suppress(FileNotFoundError):
            self._fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=self._etag or "")

    # -- local disk --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self):
        import fcntl

        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _local_read(self) -> LeaseRecord | None | bool:
        """The record; None for a torn file; False when there is no lease."""
        try:
            with open(self._path, "rb") as f:
                return LeaseRecord.decode(f.read())
        except FileNotFoundError:
            return False

    def _local_write(self, record: LeaseRecord) -> None:
        tmp = f"{self._path}.{self.token}.tmp"
        with open(tmp, "wb") as f:
            f.write(record.encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)

    def _local_acquire(self, now: datetime) -> None:
        with self._locked():
            other = self._local_read()
            if other and not other.expired(now) and other.token != self.token:
                raise LeaseHeld(self._held_message(other))
            if other is not False:
                log.warning("took over the expired lease of %s from %s", self.run_uri, other.owner if other else "a torn write")
            self._local_write(self._record(now))

    def _local_renew(self, now: datetime) -> None:
        with self._locked():
            current = self._local_read()
            if not current or current.token != self.token:
                raise LeaseLost(self._lost_message())
            self._local_write(self._record(now))

    def _local_release(self) -> None:
        with self._locked():
            current = self._local_read()
            if current and current.token == self.token:
                os.remove(self._path)

    # -- public ------------------------------------------------------------------------------------
    def _lost_message(self) -> str:
        return (
            f"the lease of run id {self.run_uri} expired and was taken over by another writer; "
            "this run stops without committing (its staged files stay for --resume)"
        )

    def acquire(self) -> "RunLease":
        """Take the lease (see the module's docstring). Raises LeaseHeld or OSError."""
        now = datetime.now(timezone.utc)
        self._acquired_at = now.isoformat()
        (self._s3_acquire if self._remote else self._local_acquire)(now)
        log.info("lease of %s taken by %s", self.run_uri, self.owner)
        return self

    def renew(self) -> None:
        """Extend the lease by ``ttl_seconds``; safe from several threads at once (the heartbeat and
        :meth:`check`). Raises LeaseLost when another writer has it."""
        with self._renewing:
            if self._lost:
                raise LeaseLost(self._lost)
            (self._s3_renew if self._remote else self._local_renew)(datetime.now(timezone.utc))

    def check(self) -> None:
        """Renew now, so the caller holds the lease for at least ``ttl_seconds``; called before a
        commit point. Raises LeaseLost when this writer no longer holds it."""
        self.renew()

    def release(self) -> None:
        """Give the lease up (only if it is still this writer's)."""
        try:
            (self._s3_release if self._remote else self._local_release)()
        except OSError as exc:  # expired or taken over: nothing of ours to remove
            log.warning("could not release the lease of %s: %s", self.run_uri, exc)

    def _heartbeat(self) -> None:
        every = self.ttl_seconds / 4
        while not self._stop.wait(every):
            try:
                self.renew()
            except LeaseLost as exc:
                self._lost = str(exc)
                log.error("%s", exc)
                return
            except OSError as exc:  # a storage hiccup: the next beat tries again, within the TTL
                log.warning("could not renew the lease of %s: %s", self.run_uri, exc)

    def __enter__(self) -> "RunLease":
        self.acquire()
        _HELD[self.run_uri] = self
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease {self.run_uri}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        _HELD.pop(self.run_uri, None)
        if not self._lost:
            self.release()


#: The leases this process holds, by run URI (filled by ``RunLease.__enter__``), so that the commit
#: can check its run's lease without the lease being passed through every layer.
_HELD: dict[str, RunLease] = {}


def held(run_uri: str) -> RunLease | None:
    """The lease this process holds on ``run_uri``, if any."""
    return _HELD.get(run_uri)


def _precondition_failed(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and (
        exc.errno == errno.EINVAL and "pre-condition" in str(exc) or "PreconditionFailed" in str(exc)
    )
