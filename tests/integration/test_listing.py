from pathlib import Path

import pytest

from batch_classify.listing import ListingError, list_images, read_manifest
from batch_classify.storage import StorageOptions

OPTS = StorageOptions()


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_recursive_listing_labels_and_ignored(tmp_path):
    _touch(tmp_path / "n01440764" / "a.JPG")
    _touch(tmp_path / "n01440764" / "deep" / "b.webp")
    _touch(tmp_path / "goldfish" / "c.Png")
    _touch(tmp_path / "top.tiff")
    _touch(tmp_path / "n01440764" / "notes.txt")
    _touch(tmp_path / "README")
    _touch(tmp_path / ".hidden.jpg")
    listing = list_images(str(tmp_path), OPTS)
    got = {Path(r.path).relative_to(tmp_path).as_posix(): r.label for r in listing.records}
    assert got == {
        "n01440764/a.JPG": "n01440764",
        "n01440764/deep/b.webp": "deep",
        "goldfish/c.Png": "goldfish",
        "top.tiff": None,
    }
    assert [r.path for r in listing.records] == sorted(r.path for r in listing.records)
    assert listing.n_ignored == 3 and listing.ignored_extensions == {".txt": 1, "": 1, "(hidden file)": 1}


def test_limit_keeps_first_by_path(tmp_path):
    for name in "dcba":
        _touch(tmp_path / "x" / f"{name}.jpg")
    assert [Path(r.path).name for r in list_images(str(tmp_path), OPTS, limit=2).records] == ["a.jpg", "b.jpg"]


def test_manifest_labels_relative_and_absolute(tmp_path):
    a = _touch(tmp_path / "in" / "a.jpg")
    _touch(tmp_path / "in" / "sub" / "b.jpg")
    _touch(tmp_path / "in" / "c.jpg")
    manifest = _touch(tmp_path / "labels.csv", f"path,label\n{a},tench\nsub/b.jpg,n01443537\n".encode())
    listing = list_images(str(tmp_path / "in"), OPTS, labels_uri=str(manifest))
    assert {Path(r.path).name: r.label for r in listing.records} == {"a.jpg": "tench", "b.jpg": "n01443537", "c.jpg": None}


def test_manifest_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a.jpg"], "label": ["tench"], "extra": [1]}), tmp_path / "l.parquet")
    assert read_manifest(str(tmp_path / "l.parquet"), OPTS) == {"a.jpg": "tench"}


@pytest.mark.parametrize(
    "content, message",
    [(b"file,label\na,b\n", "columns path,label"), (b"path,label\na,x\na,y\n", "two labels")],
)
def test_bad_manifest(tmp_path, content, message):
    _touch(tmp_path / "in" / "a.jpg")
    manifest = _touch(tmp_path / "labels.csv", content)
    with pytest.raises(ListingError, match=message):
        list_images(str(tmp_path / "in"), OPTS, labels_uri=str(manifest))


def test_missing_empty_and_file_inputs_are_named(tmp_path):
    with pytest.raises(ListingError, match=f"input {tmp_path / 'nope'} does not exist"):
        list_images(str(tmp_path / "nope"), OPTS)
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "empty" / "notes.txt")
    with pytest.raises(ListingError, match=r"holds no image \(1 other files ignored\)"):
        list_images(str(tmp_path / "empty"), OPTS)
    f = _touch(tmp_path / "one.jpg")
    with pytest.raises(ListingError, match="is a file"):
        list_images(str(f), OPTS)


def test_s3_listing_keeps_uri_form(s3_endpoint, s3_dataset):
    opts = StorageOptions(endpoint_url=s3_endpoint)
    listing = list_images(s3_dataset, opts, limit=3)
    assert [r.path.startswith("s3://photos/imagenet-sample/n0") for r in listing.records] == [True] * 3
    assert all(r.label == r.path.split("/")[-2] for r in listing.records)
    with pytest.raises(ListingError, match="s3://photos/missing does not exist"):
        list_images("s3://photos/missing", opts)


def test_partition_folders_become_columns_and_are_never_labels(tmp_path):
    _touch(tmp_path / "date=2026-11-29" / "IMG_0001.jpg")
    _touch(tmp_path / "date=2026-11-30" / "camera=7" / "IMG_0002.jpg")
    _touch(tmp_path / "date=2026-11-30" / "n01440764" / "camera=8" / "IMG_0003.jpg")
    listing = list_images(str(tmp_path), OPTS)
    got = {Path(r.path).name: (r.label, dict(r.partitions)) for r in listing.records}
    assert got == {
        "IMG_0001.jpg": (None, {"date": "2026-11-29"}),
        "IMG_0002.jpg": (None, {"date": "2026-11-30", "camera": "7"}),
        "IMG_0003.jpg": ("n01440764", {"date": "2026-11-30", "camera": "8"}),  # the nearest non-partition folder
    }
    assert listing.partition_keys == ("date", "camera") and listing.label_source == "folders"


@pytest.mark.parametrize(
    ("folders", "message"),
    [(("label=x",), r"named like the predictions' column 'label'"), (("day=1", "day=2"), r"'day' appears twice")],
)
def test_bad_partition_keys_are_named(tmp_path, folders, message):
    _touch(tmp_path.joinpath(*folders, "a.jpg"))
    with pytest.raises(ListingError, match=message):
        list_images(str(tmp_path), OPTS)


def test_labels_none_drops_every_label(tmp_path):
    _touch(tmp_path / "n01440764" / "a.jpg")
    listing = list_images(str(tmp_path), OPTS, labels_uri="none")
    assert [r.label for r in listing.records] == [None] and listing.label_source == "none"


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"path": ["a.jpg"], "label": [3]}, r"column label holds int64, not text.*not class indices"),
        ({"path": ["a.jpg"], "label": [["tench"]]}, r"column label holds list<\w+: string>, not text"),
        ({"path": [1], "label": ["tench"]}, r"column path holds int64, not text"),
    ],
)
def test_manifest_columns_that_are_not_text_are_named(tmp_path, columns, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    _touch(tmp_path / "in" / "a.jpg")
    pq.write_table(pa.table(columns), tmp_path / "l.parquet")
    with pytest.raises(ListingError, match=message):
        list_images(str(tmp_path / "in"), OPTS, labels_uri=str(tmp_path / "l.parquet"))


def test_manifest_rows_matched_are_counted_and_none_stops(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _touch(tmp_path / "in" / name)
    manifest = _touch(tmp_path / "labels.csv", b"path,label\na.jpg,tench\nb.jpg,tench\nelsewhere/x.jpg,tench\n")
    listing = list_images(str(tmp_path / "in"), OPTS, labels_uri=str(manifest), limit=1)
    assert (listing.manifest_rows, listing.manifest_matched) == (3, 2)  # counted over every listed image
    stray = _touch(tmp_path / "stray.csv", b"path,label\nother/a.jpg,tench\n/somewhere/b.jpg,tench\n")
    with pytest.raises(ListingError, match=r"none of the 2 rows of label manifest .* names an image under"):
        list_images(str(tmp_path / "in"), OPTS, labels_uri=str(stray))


def test_a_fifo_named_like_an_image_is_ignored_and_counted_never_read(tmp_path):
    import os

    _touch(tmp_path / "n01440764" / "a.jpg")
    os.mkfifo(tmp_path / "n01440764" / "pipe.jpg")  # opening it for reading would block until a writer comes
    listing = list_images(str(tmp_path), OPTS)
    assert [Path(r.path).name for r in listing.records] == ["a.jpg"]
    assert listing.n_ignored == 1 and listing.ignored_extensions == {"(not a regular file)": 1}


HIDDEN = ["x/.hidden_photo.jpg", "x/._IMG.jpg", ".DS_Store", "._top.jpg", ".hiddendir/p.jpg", ".hiddendir/q.jpg",
          "x/.git/objects/o.png", "x/.git/HEAD"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_hidden_entries_follow_one_rule_and_are_counted_by_reason(where, tmp_path, request):
    """Hidden files are not listed, AppleDouble files counted apart, hidden folders not entered and
    counted once each; the same on local disk and S3, and nothing goes uncounted."""
    names = ["x/IMG_1.jpg", "y/IMG_2.jpg", *HIDDEN]
    if where == "local":
        for name in names:
            _touch(tmp_path / "in" / name)
        uri, storage = str(tmp_path / "in"), OPTS
    else:
        import boto3

        endpoint = request.getfixturevalue("s3_endpoint")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="hidden-entries")
        for name in names:
            s3.put_object(Bucket="hidden-entries", Key=f"in/{name}", Body=b"x")
        uri, storage = "s3://hidden-entries/in", StorageOptions(endpoint_url=endpoint)
    listing = list_images(uri, storage)
    assert [r.path.rsplit("/", 2)[-2:] for r in listing.records] == [["x", "IMG_1.jpg"], ["y", "IMG_2.jpg"]]
    assert listing.ignored_extensions == {"(hidden file)": 2, "(AppleDouble ._ file)": 2, "(hidden folder, not entered)": 2}
    assert listing.n_ignored == 6


def test_the_runs_own_output_inside_its_input_is_left_out(tmp_path):
    """An output (and a table) inside the input: not listed and not counted as ignored input."""
    _touch(tmp_path / "in" / "x" / "a.jpg")
    _touch(tmp_path / "in" / "out" / "run-1" / "predictions" / "part-0.parquet")
    _touch(tmp_path / "in" / "out" / "run-1" / "thumb.jpg")
    _touch(tmp_path / "in" / "tables" / "t" / "part-0.parquet")
    listing = list_images(str(tmp_path / "in"), OPTS, exclude=(str(tmp_path / "in" / "out"), str(tmp_path / "in" / "tables" / "t"),
                                                                 str(tmp_path / "elsewhere")))
    assert [Path(r.path).name for r in listing.records] == ["a.jpg"] and listing.n_ignored == 0
    assert listing.left_out == (str(tmp_path / "in" / "out"), str(tmp_path / "in" / "tables" / "t"))
