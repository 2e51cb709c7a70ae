"""S3 endpoints on 127.0.0.1 that misbehave on purpose, in front of a real one (moto's server).

:class:`S3Proxy` forwards every request unchanged unless its ``intercept`` answers it;
:class:`FlakyS3Proxy` answers some with ``503 SlowDown`` (a throttled S3), :class:`StallingS3Proxy`
accepts some and never answers (a stalled read).
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Hop-by-hop headers that are not forwarded.
_SKIP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect"}


class S3Proxy:
    """An S3 endpoint on 127.0.0.1 in front of ``target``.

    Args:
        target: the real endpoint's URL.
        intercept: called with the request's handler before forwarding; returns True when it has
            answered the request itself (then nothing is forwarded).

    Attributes:
        url: the proxy's endpoint URL.
    """

    def __init__(self, target: str, intercept: Callable[[BaseHTTPRequestHandler], bool] | None = None) -> None:
        host, port = urlsplit(target).hostname, urlsplit(target).port

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if intercept is not None and intercept(self):
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP}
                conn = http.client.HTTPConnection(host, port, timeout=120)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() in ("transfer-encoding", "connection") or (k.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FlakyS3Proxy(S3Proxy):
    """Fails like a throttled S3: answers ``503 SlowDown`` to the first ``fail_first`` requests and
    then to every ``fail_every``-th, forwarding all others unchanged.

    Attributes:
        seen: requests so far; failed: how many of them it refused.
    """

    def __init__(self, target: str, *, fail_first: int = 3, fail_every: int = 10) -> None:
        lock = threading.Lock()
        self.seen = self.failed = 0

        def refuse(handler: BaseHTTPRequestHandler) -> bool:
            with lock:
                n = self.seen
                self.seen += 1
                refused = n < fail_first or n % fail_every == 0
                self.failed += refused
            if refused:
                payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                           b"<Message>Please reduce your request rate.</Message></Error>")
                handler.send_response(503)
                handler.send_header("Content-Type", "application/xml")
                handler.send_header("Content-Length", str(len(payload)))
                handler.end_headers()
                handler.wfile.write(payload)
            return refused

        super().__init__(target, refuse)


class StallingS3Proxy(S3Proxy):
    """Accepts every GET or HEAD of a key containing ``marker`` and never answers it (until
    ``close``): a stalled read. Every other request is forwarded unchanged.

    Attributes:
        stalled: requests held so far.
    """

    def __init__(self, target: str, *, marker: str = "/stall-") -> None:
        self._release = threading.Event()
        self.stalled = 0

        def stall(handler: BaseHTTPRequestHandler) -> bool:
            if handler.command in ("GET", "HEAD") and marker in urlsplit(handler.path).path:
                self.stalled += 1
                self._release.wait()  # the request was accepted; no answer ever comes
                handler.close_connection = True
                return True
            return False

        super().__init__(target, stall)

    def close(self) -> None:
        self._release.set()
        super().close()
