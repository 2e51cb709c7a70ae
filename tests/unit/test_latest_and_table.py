"""The latest pointer and the Delta table on local disk, from runs staged and committed by the real
writer (no Ray): idempotent under a retried persist, only moving forward, a partition per run id."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta

import pytest
from deltalake import DeltaTable

from batch_classify.run import steps
from batch_classify.run.layout import latest_pointer
from batch_classify.run.results import StagingWriter, committed_manifest
from batch_classify.settings import RunSettings, ServeSettings
from batch_classify.storage import StorageOptions
from batch_classify.run.table import (
    LATEST_FIELDS,
    TableWriteFailed,
    delta_storage_options,
    latest_record,
    read_latest,
    update_latest,
)
from batch_classify.models.vocabulary import imagenet

from helpers.batches import actor_batch

LOCAL = StorageOptions()


def _staged(settings: RunSettings, paths: list[str], failed=frozenset()):
    writer = StagingWriter(
        settings.run_uri(), run_id=settings.run_id, model=settings.model, vocabulary=imagenet(), label_map={},
        storage=LOCAL, meta={"input": settings.input},
    )
    writer.write(actor_batch(paths, set(failed)))
    return writer.close()


def _settings(tmp_path, run_id: str, **kw) -> RunSettings:
    return RunSettings(
        input=str(tmp_path / "in"), output=str(tmp_path / "out"), model="efficientnet_lite0", run_id=run_id, **kw
    )


def _rows(table: str) -> list[tuple[str, str]]:
    t = DeltaTable(table).to_pyarrow_table(columns=["run_id", "path"])
    return sorted(zip(t.column("run_id").to_pylist(), t.column("path").to_pylist()))


def test_two_runs_fill_one_table_and_a_retried_persist_duplicates_nothing(tmp_path):
    table = str(tmp_path / "table")
    a = _settings(tmp_path, "a", table=table, max_failed_fraction=0.5)
    staged_a = _staged(a, ["x/1.jpg", "x/2.jpg", "x/3.jpg"], failed={"x/3.jpg"})
    committed = steps.persist(a, staged_a)
    assert _rows(table) == [("a", "x/1.jpg"), ("a", "x/2.jpg")]

    # The persist task's retry, after its first try committed: no error, the same result, no new rows.
    assert steps.persist(a, staged_a) == committed
    assert _rows(table) == [("a", "x/1.jpg"), ("a", "x/2.jpg")]

    b = _settings(tmp_path, "b", table=table)
    steps.persist(b, _staged(b, ["x/1.jpg", "x/4.jpg"]))
    dt = DeltaTable(table)
    assert _rows(table) == [("a", "x/1.jpg"), ("a", "x/2.jpg"), ("b", "x/1.jpg"), ("b", "x/4.jpg")]
    assert dt.metadata().partition_columns == ["run_id"]
    assert sorted(p["run_id"] for p in dt.partitions()) == ["a", "b"]
    rows = dt.to_pyarrow_table().to_pylist()
    assert {r["input"] for r in rows} == {str(tmp_path / "in")} and {r["model"] for r in rows} == {"efficientnet_lite0"}
    manifest_b = committed_manifest(b.run_uri(), LOCAL)
    assert {r["committed_at"] for r in rows if r["run_id"] == "b"} == {datetime.fromisoformat(manifest_b["committed_at"])}
    assert {r["pred_label"] for r in rows} == {imagenet().names[1]}

    # A re-run of run id a (a new attempt): its partition replaced in one version, b's rows untouched.
    version = dt.version()
    steps.persist(a, _staged(a, ["x/5.jpg"]))
    assert _rows(table) == [("a", "x/5.jpg"), ("b", "x/1.jpg"), ("b", "x/4.jpg")]
    assert DeltaTable(table).version() == version + 1

    latest = read_latest(str(tmp_path / "out"), str(tmp_path / "in") + "/", LOCAL)  # any name of the input
    assert set(latest) == set(LATEST_FIELDS)
    assert latest["run_id"] == "a" and latest["run_uri"] == a.run_uri() and latest["n_predicted"] == 1


def test_without_table_only_the_pointer_is_written(tmp_path):
    a = _settings(tmp_path, "a")
    steps.persist(a, _staged(a, ["x/1.jpg"]))
    assert read_latest(a.output, a.input, LOCAL)["run_id"] == "a"
    assert sorted(os.listdir(tmp_path / "out")) == ["_latest", "a"]


def test_a_failed_table_write_names_the_table_and_the_retry_finishes_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the table's parent folder should be")
    table = str(blocker / "table")
    a = _settings(tmp_path, "a", table=table)
    staged = _staged(a, ["x/1.jpg", "x/2.jpg"])
    with pytest.raises(TableWriteFailed, match=rf"run a is committed at {a.run_uri()}, but writing it into the Delta table {table} failed"):
        steps.persist(a, staged)
    assert (tmp_path / "out" / "a" / "_SUCCESS").exists()  # committed before the table write

    blocker.unlink()  # the storage is fixed; the task's retry runs persist again with the same staged run
    steps.persist(a, staged)
    assert _rows(table) == [("a", "x/1.jpg"), ("a", "x/2.jpg")]


def test_a_newer_version_adds_columns_to_the_table(tmp_path):
    """Schema merge: a run whose rows carry a column the table does not have yet (here an input's
    partition column) is written; earlier rows read it as null."""
    table = str(tmp_path / "table")
    a = _settings(tmp_path, "a", table=table)
    steps.persist(a, _staged(a, ["x/1.jpg"]))
    b = _settings(tmp_path, "b", table=table)
    writer = StagingWriter(b.run_uri(), run_id="b", model=b.model, vocabulary=imagenet(), label_map={}, storage=LOCAL,
                           partition_keys=("date",), meta={"input": b.input, "partition_keys": ["date"]})
    writer.write(actor_batch(["date=2026-12-01/1.jpg"]))
    steps.persist(b, writer.close())
    rows = {r["run_id"]: r["date"] for r in DeltaTable(table).to_pyarrow_table(columns=["run_id", "date"]).to_pylist()}
    assert rows == {"a": None, "b": None}  # the writer without records leaves partition values null


def _record(tmp_path, run_id: str, committed_at: datetime) -> dict:
    manifest = {"run_id": run_id, "model": "m", "committed_at": committed_at.isoformat(), "n_predicted": 1, "n_failed": 0}
    return latest_record(str(tmp_path / "in"), str(tmp_path / "out" / run_id), manifest)


def test_the_latest_pointer_only_moves_forward(tmp_path):
    out = str(tmp_path / "out")
    assert read_latest(out, str(tmp_path / "in"), LOCAL) is None
    t = datetime.fromisoformat("2026-12-01T02:00:00+00:00")
    assert update_latest(out, _record(tmp_path, "second", t), LOCAL)
    assert not update_latest(out, _record(tmp_path, "first", t - timedelta(microseconds=1)), LOCAL)  # committed earlier
    assert read_latest(out, str(tmp_path / "in"), LOCAL)["run_id"] == "second"
    assert update_latest(out, _record(tmp_path, "second", t), LOCAL)  # the same commit again (a retry)
    assert update_latest(out, _record(tmp_path, "third", t + timedelta(seconds=1)), LOCAL)
    assert read_latest(out, str(tmp_path / "in"), LOCAL)["run_id"] == "third"

    pointer = latest_pointer(out, str(tmp_path / "in"))
    with open(pointer, "w") as f:
        f.write('{"run_id": "torn')  # a pointer that cannot be read is replaced
    assert read_latest(out, str(tmp_path / "in"), LOCAL) is None
    assert update_latest(out, _record(tmp_path, "fourth", t), LOCAL)
    assert json.loads(open(pointer).read())["run_id"] == "fourth"
    assert sorted(os.listdir(os.path.dirname(pointer))) == sorted([os.path.basename(pointer), os.path.basename(pointer) + ".lock"])


def test_the_tables_storage_options_come_from_the_runs():
    assert delta_storage_options("/data/table", StorageOptions()) == ("/data/table", {})
    uri, options = delta_storage_options("s3://anonymous@bucket/t", StorageOptions(endpoint_url="http://127.0.0.1:9000"))
    assert uri == "s3://bucket/t"
    assert options == {
        "aws_conditional_put": "etag", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ALLOW_HTTP": "true",
        "AWS_SKIP_SIGNATURE": "true",
    }
    assert delta_storage_options("s3://bucket/t", StorageOptions()) == ("s3://bucket/t", {"aws_conditional_put": "etag"})


def test_table_setting_is_an_absolute_uri_and_off_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _settings(tmp_path, "a").table is None
    assert _settings(tmp_path, "a", table="tables/predictions/").table == str(tmp_path / "tables" / "predictions")
    assert _settings(tmp_path, "a", table="s3a://b//t/").table == "s3://b/t"
    with pytest.raises(ValueError, match="table is empty"):
        _settings(tmp_path, "a", table="")
    # The deployments carry it (serve reads BATCH_CLASSIFY_TABLE), resolved where serve starts, not on the worker.
    monkeypatch.setenv("BATCH_CLASSIFY_TABLE", "tables/predictions")
    serve = ServeSettings(input=str(tmp_path / "in"), output=str(tmp_path / "out"))
    assert serve.run_defaults()["table"] == str(tmp_path / "tables" / "predictions")


def _two_nights(tmp_path) -> str:
    table = str(tmp_path / "table")
    for run_id, paths in (("night-1", ["x/1.jpg", "x/2.jpg", "x/3.jpg"]), ("night-2", ["x/1.jpg", "x/2.jpg"])):
        s = _settings(tmp_path, run_id, table=table)
        steps.persist(s, _staged(s, paths))
    return table


def test_the_readmes_pointer_query_reads_the_latest_run(tmp_path):
    """README "Querying predictions", without a table: the pointer, then ``read_committed``."""
    from batch_classify.run.results import read_committed

    _two_nights(tmp_path)
    latest = read_latest(str(tmp_path / "out"), str(tmp_path / "in"), LOCAL)
    assert latest["run_id"] == "night-2" and read_committed(latest["run_uri"], LOCAL).num_rows == 2


def test_the_readmes_polars_lines(tmp_path):
    """README "Querying predictions" with Polars, where installed (the user's tool, not a dependency)."""
    pl = pytest.importorskip("polars")
    runs = pl.scan_delta(_two_nights(tmp_path))
    latest = runs.filter(pl.col("committed_at") == pl.col("committed_at").max()).collect()
    summary = runs.group_by("run_id").agg(n=pl.len(), top1=(pl.col("pred_index") == pl.col("label_index")).mean()).sort("run_id").collect()
    assert set(latest["run_id"]) == {"night-2"} and latest.height == 2
    assert summary["n"].to_list() == [3, 2]


def test_the_readmes_duckdb_lines(tmp_path):
    """README "Querying predictions" with DuckDB, where installed (the user's tool, not a dependency)."""
    duckdb = pytest.importorskip("duckdb")
    import deltalake

    runs = deltalake.DeltaTable(_two_nights(tmp_path)).to_pyarrow_dataset()  # noqa: F841 - DuckDB reads it by name
    latest = duckdb.sql("SELECT * FROM runs WHERE run_id = (SELECT arg_max(run_id, committed_at) FROM runs)").fetchall()
    summary = duckdb.sql("SELECT run_id, count(*) AS n, avg((pred_index = label_index)::INT) AS top1 FROM runs GROUP BY run_id ORDER BY run_id").fetchall()
    assert len(latest) == 2 and [(r, n) for r, n, _ in summary] == [("night-1", 3), ("night-2", 2)]
