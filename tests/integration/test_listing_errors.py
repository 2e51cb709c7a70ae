"""Listing errors are never silent (issue 12): a folder that cannot be listed is a ``list`` failure,
counted against the failure budget; symbolic links to folders are followed, each folder once.

An unreadable folder is made real with permissions: the listing runs in a subprocess as an
unprivileged user (``setpriv`` to ``nobody`` when the tests run as root, who reads any folder
whatever its mode), on a tree under a world-readable temporary folder, with one sub-folder of
mode 000.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.photos import arrange_in_wnid_folders

import batch_classify
from batch_classify.listing import ListingError, list_images
from batch_classify.storage import StorageOptions

OPTS = StorageOptions()
ALREADY_LISTED = "(folder already listed)"  # listing.ALREADY_LISTED, spelled out: the key users see

LIST_AS_USER = """
import pickle, sys
from batch_classify.listing import ListingError, list_images
from batch_classify.storage import StorageOptions
try:
    out = list_images(sys.argv[1], StorageOptions())
except ListingError as err:
    out = err
sys.stdout.buffer.write(pickle.dumps(out))
"""


def _unprivileged() -> list[str]:
    """The command prefix that runs a process as a user whom mode 000 stops; skips where there is none."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv is not installed: no user whom a mode-000 folder stops")
    prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import batch_classify"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(Path(batch_classify.__file__).parents[1])}, cwd="/")
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this interpreter and package: {probe.stderr.strip()[-300:]}")
    return prefix


def list_as_unprivileged(uri: Path):
    """``list_images(uri)`` in a subprocess as an unprivileged user: (the Listing or ListingError, its log)."""
    done = subprocess.run(
        [*_unprivileged(), sys.executable, "-c", LIST_AS_USER, str(uri)], capture_output=True, cwd="/", timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(batch_classify.__file__).parents[1])},
    )
    assert done.returncode == 0, done.stderr.decode()
    return pickle.loads(done.stdout), done.stderr.decode()


@pytest.fixture
def open_tmp():
    """A temporary folder every user may enter (pytest's tmp_path is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="listing-errors-"))
    path.chmod(0o755)
    yield path
    for folder, _, _ in os.walk(path):
        Path(folder).chmod(0o755)
    shutil.rmtree(path)


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_an_unreadable_folder_is_a_list_failure_named_in_the_log(open_tmp):
    _touch(open_tmp / "in" / "n01440764" / "a.jpg")
    secret = open_tmp / "in" / "n01443537"
    _touch(secret / "b.jpg")
    secret.chmod(0o000)
    listing, logged = list_as_unprivileged(open_tmp / "in")
    assert [Path(r.path).name for r in listing.records] == ["a.jpg"]
    assert [(f.path, f.error) for f in listing.list_failures] == [(str(secret), "PermissionError: Permission denied")]
    assert f"could not list {secret} (PermissionError: Permission denied): counted as one failed image" in logged
    assert listing.n_ignored == 0


def test_nothing_listable_stops_naming_the_folder(open_tmp):
    _touch(open_tmp / "in" / "notes.txt")
    secret = open_tmp / "in" / "n01443537"
    _touch(secret / "b.jpg")
    secret.chmod(0o000)
    error, _ = list_as_unprivileged(open_tmp / "in")
    assert isinstance(error, ListingError)
    assert f"holds no image that could be listed; 1 folder(s) or entries could not be listed: {secret} " in str(error)
    assert "PermissionError: Permission denied" in str(error)

    (open_tmp / "in").chmod(0o000)  # the input itself
    error, _ = list_as_unprivileged(open_tmp / "in")
    assert isinstance(error, ListingError)
    assert str(error).startswith(f"input {open_tmp / 'in'} could not be listed: PermissionError: Permission denied")


def test_a_symlinked_folder_is_followed_and_a_symlinked_file_is_a_file(tmp_path):
    _touch(tmp_path / "in" / "n01440764" / "a.jpg")
    outside = _touch(tmp_path / "elsewhere" / "goldfish" / "c.png").parent
    (tmp_path / "in" / "n01443537").symlink_to(outside, target_is_directory=True)
    (tmp_path / "in" / "n01440764" / "same-as-a.jpg").symlink_to(tmp_path / "in" / "n01440764" / "a.jpg")
    listing = list_images(str(tmp_path / "in"), OPTS)
    got = {Path(r.path).relative_to(tmp_path / "in").as_posix(): r.label for r in listing.records}
    assert got == {"n01440764/a.jpg": "n01440764", "n01440764/same-as-a.jpg": "n01440764", "n01443537/c.png": "n01443537"}
    assert listing.n_ignored == 0 and listing.ignored_extensions == {}
    linked = next(r for r in listing.records if r.path.endswith("c.png"))
    assert linked.size == 1 and linked.content_id.startswith("size=1;")  # the file's, not the link's


class _Kept(logging.Handler):
    """The records a logger emits (pytest's caplog is off under ``-p no:logging``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_symlink_loop_is_reported_once_and_each_folder_listed_once(tmp_path):
    root = tmp_path / "in"
    _touch(root / "n01440764" / "a.jpg")
    (root / "n01440764" / "up").symlink_to("..", target_is_directory=True)  # a loop: in/n01440764/up/n01440764/up/…
    (root / "again").symlink_to(root / "n01440764", target_is_directory=True)  # a second way to one folder
    caplog, logger = _Kept(), logging.getLogger("batch_classify.listing")
    logger.addHandler(caplog)
    try:
        listing = list_images(str(root), OPTS)
    finally:
        logger.removeHandler(caplog)
    assert [r.path for r in listing.records] == [str(root / "n01440764" / "a.jpg")]  # once, under its real path
    assert listing.ignored_extensions == {ALREADY_LISTED: 2} and listing.n_ignored == 2
    assert sorted(listing.not_entered) == [(str(root / "again"), str(root / "n01440764")),
                                           (str(root / "n01440764" / "up"), str(root))]
    assert listing.list_failures == ()
    warned = [r.getMessage() for r in caplog.records if "already listed: not entered again" in r.getMessage()]
    assert len(warned) == 2 and any(f"{root / 'n01440764' / 'up'} is the folder {root}," in w for w in warned)


def test_a_broken_symlink_is_a_list_failure_not_an_ignored_file(tmp_path):
    _touch(tmp_path / "in" / "n01440764" / "a.jpg")
    (tmp_path / "in" / "n01440764" / "gone.jpg").symlink_to("moved-away.jpg")
    (tmp_path / "in" / "self").symlink_to("self")  # a link to itself
    listing = list_images(str(tmp_path / "in"), OPTS)
    assert listing.n_ignored == 0 and listing.ignored_extensions == {}
    assert {(Path(f.path).name, f.error.split(": ", 1)[0]) for f in listing.list_failures} == {
        ("gone.jpg", "symbolic link to 'moved-away.jpg'"), ("self", "symbolic link to 'self'"),
    }


def test_list_failures_travel_with_a_ray_job_request(tmp_path):
    """The Jobs path (cluster.write_request → stage_job's read_request) keeps them, so the job writes them."""
    from batch_classify.run import cluster
    from batch_classify.listing import ImageRecord, ListFailure, Listing

    listing = Listing(
        input="/data/in", records=(ImageRecord(path="/data/in/n01440764/a.jpg", label="n01440764", size=3),),
        list_failures=(ListFailure("/data/in/secret", "PermissionError: Permission denied"),),
        not_entered=(("/data/in/x/up", "/data/in"),), ignored_extensions={ALREADY_LISTED: 1}, n_ignored=1,
    )
    cluster.write_request(str(tmp_path / "job"), listing, {"n01440764": 0}, OPTS)
    back, label_map = cluster.read_request(str(tmp_path / "job"), OPTS)
    assert back == listing and label_map == {"n01440764": 0}


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.usefixtures("ray_local")
def test_an_unreadable_folder_is_a_failure_of_the_run_and_counts_against_the_budget(open_tmp, photos, tmp_path):
    """Through the job's steps: listed as nobody, inferred on real Ray, persisted with two budgets."""
    import json

    from batch_classify.run import steps
    from batch_classify.models.registry import get_spec
    from batch_classify.run.results import read_failures
    from batch_classify.settings import RunSettings

    src = arrange_in_wnid_folders(photos[:6], open_tmp / "in")
    secret = arrange_in_wnid_folders(photos[40:42], open_tmp / "in" / "secret")
    linked = arrange_in_wnid_folders(photos[80:82], open_tmp / "elsewhere")
    (src / "linked").symlink_to(linked, target_is_directory=True)
    (src / "loop").symlink_to(".", target_is_directory=True)
    for folder, _, _ in os.walk(open_tmp):
        Path(folder).chmod(0o755)
    secret.chmod(0o000)
    listing, _ = list_as_unprivileged(src)
    assert len(listing.records) == 8  # 6 photos and the 2 behind the link; the 2 in secret/ unknown

    storage = RunSettings(input=str(src), output=str(tmp_path / "out"), model="efficientnet_lite0").storage_options()
    spec = get_spec("efficientnet_lite0", storage)
    label_map, _ = steps.map_labels(listing, spec.vocabulary())
    settings = RunSettings(input=str(src), output=str(tmp_path / "out"), model="efficientnet_lite0", run_id="unreadable")
    outcome = steps.infer(settings, listing, label_map, spec)
    assert (outcome.staged.n_predicted, outcome.staged.n_failed) == (8, 1)

    with pytest.raises(steps.FailureBudgetExceeded, match=r"^1 of 9 images failed \(11.1%\), over the --max-failed-fraction of 5.0%"):
        steps.persist(settings, outcome.staged)  # default budget: 1 of 9 is over 5%
    assert not (tmp_path / "out" / "unreadable" / "_SUCCESS").exists()

    generous = settings.model_copy(update={"max_failed_fraction": 0.2})
    committed = steps.persist(generous, outcome.staged)
    failures = read_failures(committed.run_uri, StorageOptions()).to_pylist()
    assert failures == [{"path": str(secret), "stage": "list", "error": "PermissionError: Permission denied"}]
    report = steps.report(generous, listing, committed, outcome, vocabulary=spec.vocabulary(), wall_seconds=1.0)
    assert (report["n_listed"], report["n_predicted"], report["n_failed"], report["n_list_failed"]) == (8, 8, 1, 1)
    assert json.loads((tmp_path / "out" / "unreadable" / "report.json").read_text())["n_list_failed"] == 1
    assert "| failed | 1 (1 of them folders that could not be listed) |" in (
        tmp_path / "out" / "unreadable" / "report.md").read_text()
