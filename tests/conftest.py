"""Shared fixtures: real Prefect (test harness), real Ray, a real S3 endpoint (moto server), real photos."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "imagenet-sample"
NO_SHARED = f"the shared ImageNet photos are not at {SHARED} (a clone without ../shared beside it)"

#: Fake credentials for the loopback S3 endpoint; set before Ray starts so its workers inherit them.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SESSION_TOKEN": "",
}


def shared_photos() -> list[Path]:
    if not SHARED.is_dir():
        pytest.skip(NO_SHARED)
    return sorted(SHARED.glob("*.JPEG"))


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """The 500 shared ImageNet photos, sorted by name."""
    return shared_photos()


def arrange_in_wnid_folders(photos: list[Path], root: Path) -> Path:
    """Copy photos to ``root/<wnid>/<file>``, as in Imagenette and ImageFolder."""
    for p in photos:
        (root / p.name[:9]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, root / p.name[:9] / p.name)
    return root


@pytest.fixture(scope="session")
def wnid_folder(tmp_path_factory, photos) -> Path:
    """The shared photos arranged as ``<wnid>/<file>``."""
    return arrange_in_wnid_folders(photos, tmp_path_factory.mktemp("wnid-folders"))


@pytest.fixture(scope="session", autouse=True)
def _fake_aws_env():
    with pytest.MonkeyPatch.context() as mp:
        for k, v in FAKE_AWS.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        yield


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs, as on the CI machine)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 endpoint on 127.0.0.1 (moto's server), as s3fs's own tests use."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def s3_dataset(s3_endpoint, wnid_folder) -> str:
    """The shared photos in wnid folders under ``s3://photos/imagenet-sample/``."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="photos")
    s3.create_bucket(Bucket="results")
    for f in sorted(wnid_folder.rglob("*.JPEG")):
        s3.upload_file(str(f), "photos", f"imagenet-sample/{f.relative_to(wnid_folder).as_posix()}")
    return "s3://photos/imagenet-sample"
