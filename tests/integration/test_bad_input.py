"""A bad night's input: 40 good photos plus one file of each awkward or broken kind, through the real flow."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from helpers.photos import arrange_in_wnid_folders
from PIL import Image

from batch_classify.models.registry import LITE0_PRESET
from batch_classify.models.preprocess import DecodeError
from batch_classify.run.results import read_committed, read_failures
from batch_classify.settings import RunSettings
from batch_classify.storage import StorageOptions
from batch_classify.flows import classify

TENCH = "n01440764"


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _decodable(photo: Image.Image) -> dict[str, bytes]:
    """Awkward but decodable files, all made from one real photo."""
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    exif = Image.Exif()
    exif[0x0112] = 6
    sixteen = Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257))
    return {
        "gray.jpg": _encode(photo.convert("L"), "JPEG"),
        "sixteen-bit.png": _encode(sixteen, "PNG"),
        "palette.gif": _encode(photo.convert("P"), "GIF"),
        "cmyk.jpg": _encode(photo.convert("CMYK"), "JPEG"),
        "rgba.png": _encode(rgba, "PNG"),
        "rotated.jpg": _encode(photo, "JPEG", exif=exif.tobytes()),
        "photo.webp": _encode(photo, "WEBP"),
        "photo.bmp": _encode(photo, "BMP"),
        "photo.tiff": _encode(photo, "TIFF"),
        "png-inside.jpg": _encode(photo, "PNG"),
        "one-pixel.png": _encode(photo.resize((1, 1)), "PNG"),
        "long-strip.png": _encode(photo.resize((3000, 12)), "PNG"),
        "tall-strip.png": _encode(photo.resize((12, 3000)), "PNG"),
        "name with spaces, 'quotes\" and ünïcödé 魚.jpg": _encode(photo, "JPEG"),
    }


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_forty_good_photos_and_every_bad_kind(photos, tmp_path, executor):
    src = arrange_in_wnid_folders(photos[:40], tmp_path / "in")
    photo = Image.open(photos[0]).convert("RGB")
    awkward = _decodable(photo)
    for name, data in awkward.items():
        (src / TENCH / name).write_bytes(data)
    nested = src / "deeper" / "still deeper" / TENCH
    nested.mkdir(parents=True)
    shutil.copyfile(photos[0], nested / "nested.JPEG")
    jpeg = photos[0].read_bytes()
    broken = {
        "empty.jpg": b"",
        "not-an-image.png": b"this is a text file with an image's name\n",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "bomb.png": _encode(Image.new("L", (4000, 4000)), "PNG"),  # 16 Mpx in a few KB
    }
    for name, data in broken.items():
        (src / TENCH / name).write_bytes(data)

    settings = RunSettings(
        input=str(src), output=str(tmp_path / "out"), model="efficientnet_lite0", run_id="bad-night",
        max_image_pixels=10_000_000, max_failed_fraction=0.1, executor=executor,
    )
    state = classify(settings, return_state=True)
    assert state.is_completed(), state.message

    run = str(tmp_path / "out" / "bad-night")
    predicted = {p.rsplit("/", 1)[1] for p in read_committed(run, StorageOptions()).column("path").to_pylist()}
    assert predicted == {p.name for p in photos[:40]} | set(awkward) | {"nested.JPEG"}
    failures = {f["path"].rsplit("/", 1)[1]: f for f in read_failures(run, StorageOptions()).to_pylist()}
    assert set(failures) == set(broken)
    assert all(f["stage"] == "decode" and f["error"] for f in failures.values())
    assert failures["empty.jpg"]["error"] == "empty file"
    assert "4000x4000 is 16,000,000 pixels, over the limit of 10,000,000" in failures["bomb.png"]["error"]
    assert "truncated" in failures["truncated.jpg"]["error"].lower() or "OSError" in failures["truncated.jpg"]["error"]
    report = json.loads((tmp_path / "out" / "bad-night" / "report.json").read_text())
    assert report["n_listed"] == report["n_predicted"] + report["n_failed"] == 40 + len(awkward) + 1 + len(broken)
    assert report["n_failed"] == len(broken)
    assert report["executor"] == executor


def test_sixteen_bit_pixels_are_scaled_not_clipped():
    ramp = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256)).astype(np.uint16)
    out = LITE0_PRESET(_encode(Image.fromarray(ramp), "PNG"))
    assert 100 < out.mean() < 160  # a plain RGB conversion clips this ramp to white (mean 254)


def test_pixel_limit_refuses_before_decoding():
    data = _encode(Image.new("RGB", (3000, 3000)), "PNG")
    with pytest.raises(DecodeError, match="3000x3000 is 9,000,000 pixels, over the limit of 1,000,000"):
        LITE0_PRESET(data, max_pixels=1_000_000)
    assert LITE0_PRESET(data).shape == (224, 224, 3)  # under Pillow's default limit


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_names_with_glob_characters_are_read_literally(photos, tmp_path, s3_endpoint):
    """``photo [1].jpg``, ``x*?.jpg``: file names, not patterns, on local disk and on S3."""
    import boto3

    names = ["photo [1].jpg", "photo [2] (copy).jpg", "star*and?mark.jpg", "plain.jpg"]
    src = tmp_path / "in" / TENCH
    src.mkdir(parents=True)
    for name, photo in zip(names, photos):
        shutil.copyfile(photo, src / name)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="globs")
    for name in names:
        s3.upload_file(str(src / name), "globs", f"in/{TENCH}/{name}")
    for input, storage in ((str(tmp_path / "in"), {}), ("s3://globs/in", {"s3_endpoint_url": s3_endpoint})):
        settings = RunSettings(input=input, output=str(tmp_path / "out"), model="efficientnet_lite0", run_id="globs", **storage)
        report = classify(settings)
        assert (report["n_predicted"], report["n_failed"]) == (4, 0), input
        paths = read_committed(str(tmp_path / "out" / "globs"), StorageOptions()).column("path").to_pylist()
        assert sorted(p.rsplit("/", 1)[1] for p in paths) == sorted(names)


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_harness", "ray_local")
def test_names_that_are_not_utf8_are_failures_of_their_own_not_of_the_run(photos, tmp_path):
    """A Latin-1 file name (``caf\\xe9.jpg``) and a Latin-1 folder among good photos: before, the run
    died after inference with ``UnicodeEncodeError`` naming no file. Now each is one ``list`` failure
    with its name escaped; the run commits, its report and its table are written, and an incremental
    re-run reuses the rest."""
    import os

    not_utf8 = ("name is not valid UTF-8 (shown with those bytes escaped as \\xNN); rename it to UTF-8 "
                "(e.g. convmv -f latin1 -t utf8 -r --notest FOLDER)")  # listing.NOT_UTF8, as users read it
    src = arrange_in_wnid_folders(photos[:6], tmp_path / "in")
    root = os.fsencode(str(src / TENCH))
    shutil.copyfile(photos[10], os.path.join(root, b"caf\xe9.jpg"))
    os.mkdir(os.path.join(root, b"d\xe9j\xe0"))
    shutil.copyfile(photos[11], os.path.join(root, b"d\xe9j\xe0", b"photo.jpg"))
    out, table = tmp_path / "out", tmp_path / "table"
    settings = RunSettings(input=str(src), output=str(out), table=str(table), model="efficientnet_lite0",
                           run_id="latin1", max_failed_fraction=0.5)
    state = classify(settings, return_state=True)
    assert state.is_completed(), state.message
    report = json.loads((out / "latin1" / "report.json").read_text(encoding="utf-8"))
    assert (report["n_listed"], report["n_list_failed"], report["n_predicted"], report["n_failed"]) == (6, 2, 6, 2)
    assert report["n_listed"] + report["n_list_failed"] == report["n_predicted"] + report["n_failed"]
    failures = sorted(read_failures(str(out / "latin1"), StorageOptions()).to_pylist(), key=lambda r: r["path"])
    assert failures == [
        {"path": f"{src}/{TENCH}/caf\\xe9.jpg", "stage": "list", "error": not_utf8},
        {"path": f"{src}/{TENCH}/d\\xe9j\\xe0", "stage": "list", "error": not_utf8},
    ]
    assert (table / "_delta_log").is_dir()
    again = classify(settings.model_copy(update={"run_id": "latin1-again", "incremental": True}))
    assert (again["n_reused"], again["n_computed"], again["n_failed"]) == (6, 0, 2)
