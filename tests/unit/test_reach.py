"""Ray addresses: which host and port each form names, and a dead one named in bounded time."""

from __future__ import annotations

import socket
import time

import pytest

from batch_classify.stage.reach import AddressUnreachable, host_and_port, wait_for_address


def test_each_form_of_address_names_its_host_and_port():
    assert host_and_port("10.0.0.5:6380") == ("10.0.0.5", 6380)
    assert host_and_port("head") == ("head", 6379)
    assert host_and_port("http://head") == ("head", 8265)
    assert host_and_port("https://user:secret@head.example/") == ("head.example", 443)
    assert host_and_port("http://[::1]:8265") == ("::1", 8265)
    assert host_and_port("auto") is None and host_and_port("local") is None


def test_an_address_that_refuses_is_named_as_given_once_the_deadline_passes():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(AddressUnreachable, match=rf"^ray address http://127.0.0.1:{port} does not answer \(ConnectionRefusedError"):
        wait_for_address(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}", deadline_s=2.0)
    assert time.monotonic() - start < 5


def test_an_address_that_listens_passes_at_once():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        wait_for_address(f"127.0.0.1:{server.getsockname()[1]}", "x", deadline_s=2.0)  # no error
