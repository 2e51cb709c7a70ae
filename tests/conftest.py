"""Shared fixtures: real Prefect (test harness), real Ray, a real S3 endpoint (moto server), real photos."""

from __future__ import annotations

from pathlib import Path

import pytest

from batch_classify.storage import StorageOptions

from helpers.net import FAKE_AWS, free_port
from helpers.photos import DEFAULT_PHOTOS, arrange_in_wnid_folders, missing_reason


def pytest_addoption(parser):
    parser.addoption(
        "--photos", default=str(DEFAULT_PHOTOS), metavar="DIR",
        help="folder of real ImageNet photos named <wnid>_<name>.JPEG (default: ../shared/imagenet-sample)",
    )


@pytest.fixture(scope="session")
def photos_dir(pytestconfig) -> Path:
    """The folder of shared photos (``--photos``); the tests that use it skip where it is missing."""
    folder = Path(pytestconfig.getoption("photos")).expanduser().resolve()
    if not folder.is_dir():
        pytest.skip(missing_reason(folder))
    return folder


@pytest.fixture(scope="session")
def photos(photos_dir) -> list[Path]:
    """The shared ImageNet photos, sorted by name."""
    return sorted(photos_dir.glob("*.JPEG"))


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
    """One local Ray for the whole session (2 CPUs, as on the CI machine), started as a run starts it
    (after any earlier run's shutdown in the background has ended)."""
    import ray

    from batch_classify.stage.ray_start import start_ray

    start_ray(None, num_cpus=2, verbose=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3 endpoint on 127.0.0.1 (moto's server), as s3fs's own tests use."""
    from moto.server import ThreadedMotoServer

    port = free_port()
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


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path):
    """(run URI, storage) on a local folder or on the loopback S3 endpoint."""
    if request.param == "local":
        return str(tmp_path / "out" / "r"), StorageOptions()
    endpoint = request.getfixturevalue("s3_endpoint")
    import boto3

    bucket = f"commit-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/out/r", StorageOptions(endpoint_url=endpoint)
