"""Whether a Ray address answers, in bounded time, before Ray is asked to join it.

``ray.init(address="HOST:PORT")`` on an address where nothing listens does not fail: it retries its
connection to the GCS for minutes, printing only Ray's own warnings (measured with ray 2.60: still
running at 240 s for ``127.0.0.1:1``). ``JobSubmissionClient`` on a host that drops packets waits as
long as the operating system's TCP connect does. So before either, :func:`wait_for_address` opens a
plain TCP connection to the address's host and port, again and again for up to
:data:`CONNECT_DEADLINE_S`, and raises one line naming the address as the user gave it.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

from batch_classify.errors import BatchClassifyError

#: Seconds :func:`wait_for_address` keeps trying: long enough for a head node that is restarting to
#: come back (its GCS listens within seconds of its start), short enough that the infer task, with
#: its one retry after 10 s, fails within about a minute.
CONNECT_DEADLINE_S = 25.0
#: Seconds one TCP connection attempt may take (a host that drops packets never refuses).
ATTEMPT_TIMEOUT_S = 5.0
#: Seconds between attempts.
RETRY_EVERY_S = 1.0
#: Ray's default ports: the GCS of ``ray start --head`` and the dashboard's Jobs API.
GCS_PORT = 6379
DASHBOARD_PORT = 8265


class AddressUnreachable(BatchClassifyError, ConnectionError):
    """Nothing answered at a Ray address for :data:`CONNECT_DEADLINE_S` seconds. Not permanent (a head
    node may be restarting): the infer task retries once."""


def host_and_port(address: str) -> tuple[str, int] | None:
    """The TCP host and port behind a Ray address: ``HOST[:PORT]`` (the GCS, default 6379) or
    ``http(s)://HOST[:PORT]`` (the Jobs API, default 8265 for http, 443 for https); None for ``auto``
    and ``local``, which name no host."""
    text = address.strip()
    if text.lower() in ("auto", "local", ""):
        return None
    if "://" in text:
        parts = urlsplit(text)
        default = DASHBOARD_PORT if parts.scheme.lower() == "http" else 443
        return parts.hostname or "", parts.port or default
    parts = urlsplit(f"//{text}")
    return parts.hostname or "", parts.port or GCS_PORT


def wait_for_address(address: str, shown: str, *, deadline_s: float = CONNECT_DEADLINE_S) -> None:
    """Return once a TCP connection to ``address``'s host and port succeeds; try for ``deadline_s``.

    Args:
        address: the Ray address (see :func:`host_and_port`).
        shown: the address as the message names it (the user's spelling, without credentials).

    Raises:
        AddressUnreachable: no connection within ``deadline_s`` seconds; the message names ``shown``,
            the last error and what to check.
    """
    target = host_and_port(address)
    if target is None:
        return
    start = time.monotonic()
    while True:
        try:
            with socket.create_connection(target, timeout=ATTEMPT_TIMEOUT_S):
                return
        except OSError as err:
            last = f"{type(err).__name__}: {err.strerror or err}"
        waited = time.monotonic() - start
        if waited + RETRY_EVERY_S >= deadline_s:
            raise AddressUnreachable(
                f"ray address {shown} does not answer ({last}; tried for {waited:.0f} s); check --ray-address "
                "(or RAY_ADDRESS) and that the cluster's head node is up"
            )
        time.sleep(RETRY_EVERY_S)
