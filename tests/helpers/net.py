"""Loopback networking for tests: free ports, and the fake credentials of the moto S3 endpoint."""

from __future__ import annotations

import socket

#: Fake credentials for the loopback S3 endpoint; set before Ray starts so its workers inherit them.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SESSION_TOKEN": "",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
