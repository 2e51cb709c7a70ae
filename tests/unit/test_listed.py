"""The listed images in Arrow columns (issue 28 item 3): ``listed.ListedImages`` reads as the sequence of
records it replaced, and the whole-listing work on it (a label set, the images left to compute, the reuse
join) gives what the record-by-record code gave."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest

from batch_classify.listed import ImageRecord, ListedImages
from batch_classify.listing import Listing, list_images
from batch_classify.run.reuse import _matching
from batch_classify.storage import StorageOptions

RECORDS = (
    ImageRecord("/in/date=1/cam=a/n1/x.jpg", "n1", 10, "size=10;mtime=1", (("date", "1"), ("cam", "a"))),
    ImageRecord("/in/date=2/n2/y.jpg", "n2", 20, "size=20;mtime=2", (("date", "2"),)),
    ImageRecord("/in/z.jpg", None, 30, "", ()),
)


def test_the_columns_read_back_as_the_records_they_hold():
    listed = ListedImages.of(RECORDS)
    assert listed.partition_keys == ("date", "cam")
    assert len(listed) == 3 and list(listed) == list(RECORDS) and listed == RECORDS
    assert listed[1] == RECORDS[1] and listed[-1] == RECORDS[2]
    assert listed[1:] == RECORDS[1:] and isinstance(listed[1:], ListedImages) and listed[::2] == RECORDS[::2]
    with pytest.raises(IndexError):
        listed[3]
    assert listed != RECORDS[:2] and listed != ListedImages.of(RECORDS[:2])  # the comparison can fail
    assert pickle.loads(pickle.dumps(listed)) == listed  # a Prefect result, a Ray Job's request
    assert "3 images" in repr(listed)  # never a million records in a log line


def test_labels_and_the_images_left_to_compute():
    listed = ListedImages.of(RECORDS)
    assert listed.labels() == {"n1", "n2"} and listed.n_labelled() == 2
    assert listed.without({RECORDS[0].path}) == RECORDS[1:]
    assert listed.without(pa.chunked_array([[RECORDS[1].path], ["/in/not-listed.jpg"]])) == (RECORDS[0], RECORDS[2])
    assert listed.without([]) is listed


def test_facts_of_paths_in_their_order_with_nulls_for_unlisted_ones():
    facts = ListedImages.of(RECORDS).facts_of(pa.array(["/in/z.jpg", "/in/elsewhere.jpg", RECORDS[0].path]))
    assert facts.column("label").to_pylist() == [None, None, "n1"]
    assert facts.column("content_id").to_pylist() == ["", None, "size=10;mtime=1"]
    assert facts.column("partition:cam").to_pylist() == [None, None, "a"]


def test_a_listing_given_records_holds_them_in_columns():
    listing = Listing(input="/in", records=RECORDS, partition_keys=("date", "cam"))
    assert isinstance(listing.records, ListedImages) and listing.records == RECORDS


def test_listing_a_folder_gives_the_records_sorted_by_path(tmp_path):
    """Labels from the nearest folder that is not a partition, partitions as columns, sorted as Python sorts."""
    for name in ("b/day=2/n01/2.jpg", "b/day=1/n01/1.jpg", "a.b/n02/3.jpg", "a/n03/4.JPEG", "a/n03/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    listing = list_images(str(tmp_path), StorageOptions())
    got = [(r.path[len(str(tmp_path)) + 1:], r.label, r.partitions, r.size) for r in listing.records]
    assert got == sorted(got) and [g[0] for g in got] == ["a.b/n02/3.jpg", "a/n03/4.JPEG", "b/day=1/n01/1.jpg", "b/day=2/n01/2.jpg"]
    assert [g[1] for g in got] == ["n02", "n03", "n01", "n01"] and got[2][2] == (("day", "1"),) and got[0][2] == ()
    assert listing.partition_keys == ("day",) and listing.n_ignored == 1 and all(r.content_id.startswith("size=1;") for r in listing.records)
    assert list_images(str(tmp_path), StorageOptions(), limit=2).records == tuple(listing.records)[:2]


def _table(rows):
    return pa.table({"path": [p for p, _ in rows], "content_id": [c for _, c in rows]})


def test_reuse_takes_each_listed_path_once_where_its_content_is_unchanged():
    listed = ListedImages.of(RECORDS)
    earlier = _table([(RECORDS[1].path, "size=20;mtime=2"), (RECORDS[0].path, "size=10;mtime=1"),
                      (RECORDS[1].path, "size=20;mtime=2"),     # a second row of one path: the first is taken
                      (RECORDS[2].path, ""),                    # no content identity: never reused
                      ("/in/gone.jpg", "size=1;mtime=1")])      # no longer listed
    assert _matching(earlier, listed, []).to_pylist() == [0, 1]
    changed = _table([(RECORDS[0].path, "size=11;mtime=9")])
    assert _matching(changed, listed, []).to_pylist() == []
    assert _matching(earlier, listed, [pa.array([RECORDS[1].path])]).to_pylist() == [1]  # taken from an earlier source
