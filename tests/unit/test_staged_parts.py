"""The Ray stage's side of staging (issue 28 item 3), without Ray: its input pages written and read back,
and what a worker writes of an output batch (``run.staged_parts.PartWriter``) joining the driver's staged run
as the driver's own rows would. The same writer under Ray Data runs in the integration tests (every
``--executor ray`` run)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch_classify.columns import empty_outputs, with_best
from batch_classify.listed import ImageRecord, ListedImages
from batch_classify.models.vocabulary import from_names
from batch_classify.run.results import StagingWriter
from batch_classify.run.staged_parts import PartWriter, write_stage_input
from batch_classify.stage.inference import decode_pages, read_pages
from batch_classify.stage.output import PathDigest
from batch_classify.storage import StorageOptions

OPTS = StorageOptions()
VOCAB = from_names(["cat", "dog", "fox"])
LABELS = {"cat": 0, "dog": 1, "fox": 2}


def _records(n):
    return ListedImages.of(
        [ImageRecord(path=f"/in/day={i % 2}/{i:03d}.jpg", label=("cat", "dog", "wolf")[i % 3], size=10,
                     content_id=f"size=10;mtime={i}", partitions=(("day", str(i % 2)),)) for i in range(n)])


def _actor_output(rows: dict, failed=()):
    """What the model actors hand on for ``rows`` (read_pages' columns): class i % 3 predicted."""
    n = len(rows["path"])
    outputs = empty_outputs(n)
    outputs["top5_index"][:, :3] = [[i % 3, (i + 1) % 3, (i + 2) % 3] for i in range(n)]
    outputs["top5_prob"][:, :3] = [0.7, 0.2, 0.1]
    error = np.asarray(["decode: broken" if p in failed else "" for p in rows["path"]], dtype=object)
    return {**rows, **with_best(outputs), "stage": np.where(error == "", "", "decode").astype(object), "error": error,
            "unreachable": np.zeros(n, dtype=bool)}


def _writer(tmp_path, records):
    return StagingWriter(str(tmp_path / "out" / "r1"), run_id="r1", model="m", vocabulary=VOCAB, label_map=LABELS,
                         storage=OPTS, records=records, partition_keys=("day",), meta={"input": "/in"})


def test_pages_hold_every_record_once_with_its_listed_facts(tmp_path):
    records = _records(250)
    writer = _writer(tmp_path, records)
    pages = write_stage_input(records, run_uri=writer.run_uri, attempt_id=writer.attempt_id, storage=OPTS,
                              batch_size=16)
    assert len(pages.pages) == 15 and pages.n_images == 250  # 250 // 16 pages, as from_items blocked the records
    assert pages.digest == PathDigest.of(r.path for r in records)
    rows = read_pages({"page": np.asarray(pages.pages, dtype=object)}, storage=OPTS)
    assert rows["path"].tolist() == [r.path for r in records]
    assert rows["listed:content_id"][7] == "size=10;mtime=7" and rows["listed:day"][7] == "1" and rows["label"][2] == "wolf"


def test_a_workers_files_join_the_staged_run_as_the_drivers_rows_would(tmp_path):
    records = _records(12)
    rows = read_pages({"page": np.asarray(write_stage_input(
        records, run_uri=str(tmp_path / "out" / "r1"), attempt_id="a" * 32, storage=OPTS, batch_size=4).pages, dtype=object)}, storage=OPTS)
    batch = _actor_output(rows, failed={"/in/day=1/005.jpg"})

    by_driver = _writer(tmp_path / "d", records)
    by_driver.write(batch)
    want = pq.read_table(by_driver.close().prediction_files[0])

    writer = _writer(tmp_path / "w", records)
    part = PartWriter(run_uri=writer.run_uri, attempt_id=writer.attempt_id, storage=OPTS, run_id="r1", model="m",
                      vocabulary=VOCAB, label_map=LABELS, partition_keys=("day",))
    summary = part(batch)
    assert (summary["n_rows"][0], summary["n_failed"][0]) == (12, 1)
    writer.add_written(summary)
    staged = writer.close()
    assert (staged.n_predicted, staged.n_failed) == (11, 1)
    assert len(staged.prediction_files) == 1 and "/predictions/part-w" in staged.prediction_files[0]
    got = pq.read_table(staged.prediction_files[0])
    assert got.schema == want.schema and got.to_pylist() == want.to_pylist()
    assert got.column("label").to_pylist()[:3] == ["cat", "dog", None]  # "wolf" is no class: null, never invented
    failures = pq.read_table(staged.failures_file).to_pylist()
    assert failures == [{"path": "/in/day=1/005.jpg", "stage": "decode", "error": "decode: broken"}]


def test_summaries_joined_into_one_block_record_every_file(tmp_path):
    """Ray Data joins a task's small outputs into one block: the second file of a block must be committed too."""
    records = _records(8)
    rows = {"path": np.asarray([r.path for r in records], dtype=object), "label": np.asarray([r.label for r in records], dtype=object),
            "listed:content_id": np.asarray([r.content_id for r in records], dtype=object),
            "listed:day": np.asarray([dict(r.partitions)["day"] for r in records], dtype=object)}
    writer = _writer(tmp_path, records)
    part = PartWriter(run_uri=writer.run_uri, attempt_id=writer.attempt_id, storage=OPTS, run_id="r1", model="m",
                      vocabulary=VOCAB, label_map=LABELS, partition_keys=("day",))
    halves = [part(_actor_output({k: v[:5] for k, v in rows.items()}, failed={records[1].path})),
              part(_actor_output({k: v[5:] for k, v in rows.items()}, failed={records[6].path}))]
    writer.add_written({k: np.concatenate([h[k] for h in halves]) for k in halves[0]})
    staged = writer.close()
    assert (staged.n_predicted, staged.n_failed, len(staged.prediction_files)) == (6, 2, 2)
    assert sorted(p for f in staged.prediction_files for p in pq.read_table(f).column("path").to_pylist()) == sorted(
        r.path for r in records if r.path not in (records[1].path, records[6].path))


def test_without_carried_columns_the_driver_takes_the_listed_facts_from_the_listing(tmp_path):
    """The facts a batch carries, the facts the listing gives by path (one hash join), and the facts of
    reused rows (this run's, not the earlier run's) are the same."""
    records = _records(12)
    rows = read_pages({"page": np.asarray(write_stage_input(
        records, run_uri=str(tmp_path / "out" / "r1"), attempt_id="a" * 32, storage=OPTS, batch_size=4).pages,
        dtype=object)}, storage=OPTS)
    batch = _actor_output(rows)
    carried = _writer(tmp_path / "c", records)
    carried.write(batch)
    want = pq.read_table(carried.close().prediction_files[0])
    assert want.column("content_id").to_pylist()[3] == "size=10;mtime=3" and want.column("day").to_pylist()[3] == "1"

    bare = _writer(tmp_path / "b", records)
    bare.write({k: v for k, v in batch.items() if not k.startswith("listed:")})
    assert pq.read_table(bare.close().prediction_files[0]).to_pylist() == want.to_pylist()

    earlier = want.set_column(want.schema.get_field_index("label"), "label", pa.nulls(12, pa.string()))
    earlier = earlier.set_column(earlier.schema.get_field_index("day"), "day", pa.nulls(12, pa.string()))
    reused = _writer(tmp_path / "r", records)
    reused.write_reused(earlier)
    got = pq.read_table(reused.close().prediction_files[0])
    assert got.drop_columns(["run_id"]).to_pylist() == want.drop_columns(["run_id"]).to_pylist()


def test_a_page_is_decoded_in_batches_of_the_stage_size_with_its_listed_facts(tmp_path):
    """One Ray task per page (``decode_pages``): its rows go to the decoder ``batch_size`` at a time, in order."""
    pages = write_stage_input(_records(10), run_uri=str(tmp_path / "out" / "r1"), attempt_id="a" * 32, storage=OPTS,
                              batch_size=4)
    assert len(pages.pages) == 2

    def decode(batch, *, storage, tag):
        return {**batch, "tag": np.asarray([tag] * len(batch["path"]), dtype=object)}

    out = list(decode_pages({"page": np.asarray(pages.pages[:1], dtype=object)}, decode=decode, batch_size=2,
                            storage=OPTS, tag="x"))
    assert [len(b["path"]) for b in out] == [2, 2, 1]
    assert [p for b in out for p in b["path"]] == [r.path for r in _records(10)[:5]]
    assert out[2]["listed:day"].tolist() == ["0"] and out[0]["tag"].tolist() == ["x", "x"]
