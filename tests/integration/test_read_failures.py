"""Reads that hang and storage that is gone: the read timeout and the circuit breaker.

Real components throughout: moto's S3 server on loopback (conftest), a TCP forwarder in front of it
that can be switched off (a dead endpoint: its port refuses connections), an HTTP proxy that accepts
some requests and never answers them (a stalled read), a FIFO (a local read that blocks), real Ray,
real Prefect.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pyarrow.parquet as pq
import pytest

from batch_classify.run import steps
from batch_classify.listing import ImageRecord, Listing
from batch_classify.run.results import read_committed, read_failures
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions

from helpers.net import free_port
from helpers.photos import arrange_in_wnid_folders
from helpers.s3_proxy import StallingS3Proxy

MODEL = "efficientnet_lite0"


class SwitchableEndpoint:
    """A TCP forwarder on 127.0.0.1 in front of ``target`` (an S3 endpoint URL). ``down()`` closes its
    port (new connections are refused) and cuts the open ones, as when an endpoint dies; ``up()``
    listens on the same port again.

    Attributes:
        url: the endpoint URL to use.
    """

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._target = (parts.hostname, parts.port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.port = 0
        self.up()
        self.url = f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            except OSError:
                pass
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # switched off meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _upload(s3_endpoint: str, bucket: str, files: dict[str, Path]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for key, f in files.items():
        s3.upload_file(str(f), bucket, key)




# --- connection failures are told apart from failures of one file (no Ray) -------------------------------


def test_connection_failures_are_unreachable_and_per_file_failures_are_not(s3_endpoint, photos):
    """Missing keys and a corrupt JPEG on a live endpoint are per-image failures that never trip the
    breaker; reads of a port where nothing listens are connection failures, and they trip it, naming
    the endpoint."""
    from batch_classify.stage.inference import decode_batch
    from batch_classify.stage.reading import UNREACHABLE_READS_TO_TRIP, EndpointUnreachable, ReadBreaker
    from batch_classify.models.registry import get_spec

    _upload(s3_endpoint, "per-file", {"good.JPEG": photos[0]})
    import boto3

    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket="per-file", Key="corrupt.JPEG", Body=b"not a jpeg")
    preset = get_spec(MODEL).preset
    n_missing = UNREACHABLE_READS_TO_TRIP + 5
    paths = ["s3://per-file/good.JPEG", "s3://per-file/corrupt.JPEG"] + [f"s3://per-file/missing-{i}.JPEG" for i in range(n_missing)]
    live = StorageOptions(endpoint_url=s3_endpoint)
    batch = decode_batch({"path": np.array(paths, dtype=object), "label": np.full(len(paths), None)},
                         storage=live, preset=preset, read_timeout=30)
    assert list(batch["stage"][:2]) == ["", "decode"]
    assert set(batch["stage"][2:]) == {"read"} and all("FileNotFoundError" in e for e in batch["error"][2:])
    assert not batch["unreachable"].any()
    ReadBreaker(live).observe(batch)  # does not trip: the endpoint answered every read

    dead = StorageOptions(endpoint_url=f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    batch = decode_batch({"path": np.array(paths, dtype=object), "label": np.full(len(paths), None)},
                         storage=dead, preset=preset, read_timeout=30)
    elapsed = time.monotonic() - start
    assert set(batch["stage"]) == {"read"} and batch["unreachable"].all()
    assert any("EndpointConnectionError" in e for e in batch["error"])
    assert elapsed < 60, elapsed  # about 2 rounds of 3 attempts (1-3 s of backoff); the rest is not tried
    with pytest.raises(EndpointUnreachable) as info:
        ReadBreaker(dead).observe(batch)
    assert dead.endpoint_url in str(info.value) and "\n" not in str(info.value)


# --- a dead endpoint mid-stage: the stage stops at once; the next attempt resumes ---------------------------


N_IMAGES = 200


@pytest.fixture(scope="module")
def dead_mid_stage(s3_endpoint, photos, tmp_path_factory, ray_local, prefect_harness):
    """Images on S3 behind a :class:`SwitchableEndpoint`, listed and validated while it is up; switched
    off after the stage has handed back 16 images. Returns what the stage raised and when."""
    chosen = photos[:N_IMAGES]
    _upload(s3_endpoint, "breaker", {f"in/{p.name[:9]}/{p.name}": p for p in chosen})
    endpoint = SwitchableEndpoint(s3_endpoint)
    out = tmp_path_factory.mktemp("breaker-out")
    settings = RunSettings(
        input="s3://breaker/in", output=str(out), model=MODEL, run_id="dead", s3_endpoint_url=endpoint.url,
        batch_size=8, checkpoint_rows=8,
    )
    listing = steps.list_dataset(settings)
    assert len(listing.records) == N_IMAGES
    validation = steps.validate(settings, listing)
    downed_at: list[float] = []

    def progress(done: int, total: int) -> None:
        if done >= 16 and not downed_at:
            endpoint.down()
            downed_at.append(time.monotonic())

    error = None
    try:
        steps.infer(settings, listing, validation.label_map, validation.spec, progress=progress)
    except Exception as err:  # noqa: BLE001 - the test says which it must be
        error = err
    stopped_at = time.monotonic()
    yield {
        "settings": settings, "endpoint": endpoint, "error": error, "out": out,
        "seconds_after_down": stopped_at - downed_at[0] if downed_at else None,
    }
    endpoint.down()


@pytest.mark.slow
@pytest.mark.integration
def test_dead_endpoint_stops_the_stage_at_once_naming_it(dead_mid_stage):
    err = dead_mid_stage["error"]
    print(f"stage ended {dead_mid_stage['seconds_after_down']:.1f} s after the endpoint went down: {err!r}")
    assert err is not None, "the stage went on image by image against a dead endpoint"
    assert type(err).__name__ == "EndpointUnreachable", repr(err)
    message = str(err)
    assert "\n" not in message
    assert f"S3 endpoint {dead_mid_stage['endpoint'].url} is unreachable" in message
    assert "nothing was committed" in message and "--run-id dead" in message
    # Before the breaker each image waited out botocore's retries: the remaining ~150 images took 207 s
    # here (285 s for 400 in the issue). Now the stage stops after about 20 failed reads: 11 s measured
    # on the 2-core machine; 100 s leaves about a 10x margin.
    assert dead_mid_stage["seconds_after_down"] < 100
    run = dead_mid_stage["out"] / "dead"
    assert not (run / "_SUCCESS").exists()
    assert not (run / "predictions").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_next_attempt_with_the_endpoint_back_resumes(dead_mid_stage):
    from batch_classify.flows import classify

    run = dead_mid_stage["out"] / "dead"
    staged = 0
    for part in run.glob("_staging/*/predictions/part-*.parquet"):
        staged += pq.read_metadata(part).num_rows  # every staged file is complete: closed when the stage stopped
    assert staged >= 16 and f"the {staged} predictions made so far are staged" in str(dead_mid_stage["error"])

    dead_mid_stage["endpoint"].up()
    state = classify(dead_mid_stage["settings"], return_state=True)
    assert state.is_completed(), state.message
    report = state.result()
    assert (report["n_reused"], report["n_computed"], report["n_failed"]) == (staged, N_IMAGES - staged, 0)
    assert read_committed(str(run), StorageOptions()).num_rows == N_IMAGES


# --- reads that stall become read failures after the read timeout -------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_stalled_s3_reads_fail_after_the_read_timeout(s3_endpoint, photos, tmp_path, monkeypatch):
    """Two objects whose GET is accepted and never answered: the run completes, each recorded as a
    read failure naming the timeout (set through the environment, as any setting can be)."""
    from batch_classify.flows import classify

    files = {f"in/{p.name[:9]}/{p.name}": p for p in photos[:6]}
    files |= {f"in/{photos[6].name[:9]}/stall-{i}.JPEG": photos[6] for i in range(2)}
    _upload(s3_endpoint, "held-reads", files)
    proxy = StallingS3Proxy(s3_endpoint)
    # 5 s, not 2: on a loaded 2-core machine the unstalled reads through the proxy took over 2 s too
    # (CI, 2026-12-01: every sample read timed out and validation stopped the run).
    monkeypatch.setenv("BATCH_CLASSIFY_READ_TIMEOUT", "5")
    try:
        settings = RunSettings(
            input="s3://held-reads/in", output=str(tmp_path / "out"), model=MODEL, run_id="stalls",
            s3_endpoint_url=proxy.url, max_failed_fraction=0.5,
        )
        start = time.monotonic()
        state = classify(settings, return_state=True)
        elapsed = time.monotonic() - start
    finally:
        proxy.close()
    assert state.is_completed(), state.message
    assert proxy.stalled >= 2
    failures = read_failures(str(tmp_path / "out" / "stalls"), StorageOptions()).to_pylist()
    assert sorted(f["path"].rsplit("/", 1)[1] for f in failures) == ["stall-0.JPEG", "stall-1.JPEG"]
    assert {f["stage"] for f in failures} == {"read"}
    assert all("read timeout of 5 s" in f["error"] for f in failures), failures
    assert read_committed(str(tmp_path / "out" / "stalls"), StorageOptions()).num_rows == 6
    print(f"run with two stalled reads took {elapsed:.1f} s")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(300)
@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_local_read_that_blocks_fails_after_the_read_timeout(photos, tmp_path, monkeypatch):
    """A file whose read blocks in the kernel (a FIFO with no writer, as a hung NFS mount would):
    in the validation sample (this process) and in the Ray stage alike it becomes a read failure
    naming the timeout; the images after it are read."""
    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    fifo = src / photos[0].name[:9] / "blocked.JPEG"
    os.mkfifo(fifo)
    images = sorted(str(p) for p in src.rglob("*.JPEG") if p.is_file() and not p.is_fifo())
    records = tuple(ImageRecord(path=p, label=None, size=1) for p in sorted([*images, str(fifo)]))
    listing = Listing(input=str(src), records=records, label_source="none")
    monkeypatch.setenv("BATCH_CLASSIFY_READ_TIMEOUT", "1")
    settings = RunSettings(input=str(src), output=str(tmp_path / "out"), model=MODEL, run_id="fifo", labels="none")
    try:
        validation = steps.validate(settings, listing)
        assert set(validation.sample_failures) == {str(fifo)}
        assert "read timeout of 1 s" in validation.sample_failures[str(fifo)]
        outcome = steps.infer(settings, listing, {}, validation.spec)
    finally:  # release every reader still blocked on the FIFO (the abandoned threads end)
        for _ in range(4):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader waiting any more
                break
            time.sleep(0.1)
    assert (outcome.staged.n_predicted, outcome.staged.n_failed) == (len(images), 1)
    failures = pq.read_table(outcome.staged.failures_file).to_pylist()
    assert failures[0]["path"] == str(fifo) and failures[0]["stage"] == "read"
    assert "read timeout of 1 s" in failures[0]["error"]


def test_read_timeout_must_be_positive(tmp_path):
    """``--read-timeout`` is a run option; a value that is not positive is refused in one line."""
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "batch_classify", "run", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
         "--read-timeout", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == ["error: read_timeout: Input should be greater than 0"]
