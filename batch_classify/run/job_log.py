"""Following a Ray Job's log as it is written: the Jobs API's log stream, watched beside the job's status.

:func:`follow` is how :func:`batch_classify.run.cluster.run_inference_job` watches its job. The log comes
through ``JobSubmissionClient.tail_job_logs`` (a websocket: each byte of the log crosses once), not
by downloading the whole log again on every poll (``get_job_logs``), which costs a run of N lines
O(N²) bytes.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def follow(client, submission_id: str, *, echo: Callable[[str], None], poll_seconds: float):
    """Echo the job's log line by line until the job ends; returns (final status, whole log).

    The log is streamed: ``client.tail_job_logs`` (an async generator over the Jobs API's websocket)
    runs in a thread of its own with its own event loop (:class:`_LogStream`) and hands its chunks over
    a queue; this thread echoes whole lines as they come and asks for the job's status every
    ``poll_seconds`` seconds. Once the status is terminal the stream ends with the job's last output;
    only when the stream failed or did not end within ``max(10, 10 × poll_seconds)`` seconds of it is
    the whole log downloaded, once, to echo what the stream missed.
    """
    stream = _LogStream(client, submission_id)
    logs: list[str] = []  # every chunk received
    pending = ""  # the start of a line whose end has not come yet

    def take(chunk: str) -> None:
        nonlocal pending
        logs.append(chunk)
        text = pending + chunk
        end = text.rfind("\n") + 1
        for line in text[:end].splitlines():
            echo(line)
        pending = text[end:]

    try:
        while True:
            status = client.get_job_status(submission_id)
            if status.is_terminal():
                break
            deadline = time.monotonic() + poll_seconds
            for chunk in stream.chunks(until=deadline):
                take(chunk)
        for chunk in stream.chunks(until=time.monotonic() + max(10.0, 10 * poll_seconds), to_end=True):
            take(chunk)
        if not stream.ended_cleanly:
            whole = client.get_job_logs(submission_id)
            shown = "".join(logs)
            if whole.startswith(shown) and len(whole) > len(shown):
                log.debug("log stream of ray job %s ended early (%s); the rest read whole", submission_id, stream.error)
                take(whole[len(shown):])
            elif not whole.startswith(shown):
                log.warning("log stream of ray job %s does not match its log (%s)", submission_id, stream.error)
        if pending:
            echo(pending)
        return status, "".join(logs)
    finally:
        stream.close()


class _LogStream:
    """``client.tail_job_logs(submission_id)`` consumed in a daemon thread with its own event loop
    (``asyncio.run``); its chunks (str) come out of :meth:`chunks`.

    Attributes:
        ended_cleanly: the stream reached its end (the job ended and its whole log was sent).
        error: what stopped the stream otherwise (None while it runs or when it ended cleanly).
    """

    _END = object()

    def __init__(self, client, submission_id: str) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._done = False
        self.ended_cleanly = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(client, submission_id), name=f"tail {submission_id}", daemon=True
        )
        self._thread.start()

    def _run(self, client, submission_id: str) -> None:
        async def consume() -> None:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            async for chunk in client.tail_job_logs(submission_id):
                self._queue.put(chunk)

        try:
            asyncio.run(consume())
            self.ended_cleanly = True
        except BaseException as err:  # noqa: BLE001 - reported to the watcher, which reads the log whole instead
            self.error = err
        finally:
            self._queue.put(self._END)

    def chunks(self, *, until: float, to_end: bool = False):
        """Yield chunks as they arrive until the monotonic time ``until``, or until the stream ends
        (with ``to_end``, the end is what is waited for; ``until`` bounds the wait)."""
        while not self._done:
            timeout = until - time.monotonic()
            if timeout <= 0:
                return
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                return
            if item is self._END:
                self._done = True
                return
            yield item

    def close(self) -> None:
        """Stop the stream if it still runs (the watcher was interrupted or gave up waiting)."""
        loop, task = self._loop, self._task
        if self._thread.is_alive() and loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed in between
                pass
