"""One table to query, through the real steps (local Ray, efficientnet_lite0, the shared photos) on
local disk and on the loopback S3 endpoint: two runs of one input fill one Delta table, a re-run of a
run id replaces its rows, a failed run changes neither the table nor the latest pointer."""

from __future__ import annotations

import pytest
from deltalake import DeltaTable

from helpers.photos import arrange_in_wnid_folders

from batch_classify.run import steps
from batch_classify.run.results import committed_manifest
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions
from batch_classify.run.table import TableFolderTaken, delta_storage_options, latest_record, read_latest, update_latest

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

TENCH = "n01440764"


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path, photos):
    """(input, output, table, storage, put(relative name, bytes) into the input) with four photos in wnid folders."""
    src = arrange_in_wnid_folders(photos[:4], tmp_path / "in")
    if request.param == "local":
        def put(name: str, data: bytes) -> None:
            (src / name).write_bytes(data)

        return str(src), str(tmp_path / "out"), str(tmp_path / "tables" / "predictions"), StorageOptions(), put
    import boto3

    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"table-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    s3.create_bucket(Bucket=bucket)
    for f in sorted(src.rglob("*.JPEG")):
        s3.upload_file(str(f), bucket, f"in/{f.relative_to(src).as_posix()}")

    def put(name: str, data: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=data)

    storage = StorageOptions(endpoint_url=endpoint)
    return f"s3://{bucket}/in", f"s3://{bucket}/out", f"s3://{bucket}/tables/predictions", storage, put


def _run(settings: RunSettings):
    """The flow's steps in its order (without Prefect): list, validate, infer, persist."""
    listing = steps.list_dataset(settings)
    validation = steps.validate(settings, listing)
    outcome = steps.infer(settings, listing, validation.label_map, validation.spec)
    return steps.persist(settings, outcome.staged)


def _table(table: str, storage: StorageOptions) -> DeltaTable:
    uri, options = delta_storage_options(table, storage)
    return DeltaTable(uri, storage_options=options)


def _rows(dt: DeltaTable) -> list[tuple[str, str]]:
    t = dt.to_pyarrow_table(columns=["run_id", "path"])
    return sorted(zip(t.column("run_id").to_pylist(), t.column("path").to_pylist()))


def test_runs_fill_one_table_a_rerun_replaces_and_a_failed_run_changes_nothing(place):
    src, out, table, storage, put = place
    settings = dict(input=src, output=out, table=table, model="efficientnet_lite0",
                    s3_endpoint_url=storage.endpoint_url)
    first, second = (RunSettings(run_id=r, **settings) for r in ("night-1", "night-2"))
    _run(first)
    record_1 = latest_record(first.input, first.run_uri(), committed_manifest(first.run_uri(), storage))
    _run(second)

    dt = _table(table, storage)
    rows = dt.to_pyarrow_table().to_pylist()
    assert len(rows) == 8  # four photos, two runs
    assert sorted(p["run_id"] for p in dt.partitions()) == ["night-1", "night-2"]
    assert dt.metadata().partition_columns == ["run_id"]
    assert {r["input"] for r in rows} == {src} and {r["model"] for r in rows} == {"efficientnet_lite0"}
    assert all(r["label"] and r["pred_label"] and len(r["top5_index"]) == 5 for r in rows)  # labelled: wnid folders
    assert dt.to_pyarrow_dataset().count_rows() == 8  # what pyarrow.dataset (and Polars, DuckDB) read

    latest = read_latest(out, src, storage)
    assert latest["run_id"] == "night-2" and latest["run_uri"] == second.run_uri() and latest["n_predicted"] == 4
    assert not update_latest(out, record_1, storage)  # an older commit (a slow parallel run) does not move it back
    assert read_latest(out, src, storage)["run_id"] == "night-2"

    # The same run id again: its partition replaced in one new version, no duplicates.
    version = dt.version()
    _run(first)
    dt = _table(table, storage)
    assert dt.version() == version + 1
    assert _rows(dt) == sorted(set(_rows(dt))) and len(_rows(dt)) == 8
    assert read_latest(out, src, storage)["run_id"] == "night-1"  # now the latest commit of the input

    # A failed run (a corrupt file and no failures allowed) leaves the table and the pointer as they were.
    put(f"{TENCH}/corrupt.jpg", b"not an image")
    version, before = dt.version(), _rows(dt)
    with pytest.raises(steps.FailureBudgetExceeded, match="nothing was committed"):
        _run(RunSettings(run_id="night-3", max_failed_fraction=0.0, **settings))
    dt = _table(table, storage)
    assert dt.version() == version and _rows(dt) == before
    assert read_latest(out, src, storage)["run_id"] == "night-1"


def test_a_folder_of_other_files_is_not_taken_for_a_table(place):
    """The flow's first step refuses a ``--table`` that holds other files and no Delta table (local and
    S3), naming a few of them; an empty or missing folder is fine (the first commit creates the table)."""
    src, out, table, storage, _ = place
    theirs = f"{table.rsplit('/', 1)[0]}/theirs"
    from batch_classify.storage import filesystem

    fs, root = filesystem(theirs, storage)
    fs.makedirs(root, exist_ok=True)
    for name in ("a.txt", "b.jpg", "c.csv", "d.md"):
        fs.pipe_file(f"{root}/{name}", b"the user's own file\n")
    with pytest.raises(TableFolderTaken, match=r"holds other files \(a.txt, b.jpg, c.csv and 1 more\) and no Delta table"):
        steps.list_dataset(RunSettings(input=src, output=out, table=theirs, model="efficientnet_lite0", s3_endpoint_url=storage.endpoint_url))
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)) == ["a.txt", "b.jpg", "c.csv", "d.md"]
    listing = steps.list_dataset(RunSettings(input=src, output=out, table=table, model="efficientnet_lite0", s3_endpoint_url=storage.endpoint_url))
    assert len(listing.records) == 4
