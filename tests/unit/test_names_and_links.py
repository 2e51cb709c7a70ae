"""What a person reads and clicks: flow run names, run ids made from a flow run, links that open (no servers)."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import pytest

import batch_classify.flows.classify  # noqa: F401 - the module, not the function batch_classify.flows exports
from batch_classify.settings import RunSettings, new_run_id
from batch_classify.storage import StorageOptions, browser_url

flows = sys.modules["batch_classify.flows.classify"]


def test_names_prefect_makes_up_are_told_from_typed_ones():
    from prefect.utilities.names import generate_slug

    assert all(flows.generated_name(generate_slug(2)) for _ in range(2000))
    for typed in ("typed-in-the-form", "nightly", "late-upload", "rerun after fix", "classify-efficientnet_lite0-n1"):
        assert not flows.generated_name(typed), typed


def test_names_the_ui_run_form_fills_in_are_told_from_typed_ones():
    """The Prefect UI's Run form fills in a name of its own (a Greek letter, a number, a star or place, a
    suffix): made from the word lists of the installed UI's bundle, every one counts as made up."""
    import random
    import re
    from pathlib import Path

    import prefect

    bundles = sorted((Path(prefect.__file__).parent / "server" / "ui" / "assets").glob("index-*.js"))
    text = "".join(p.read_text(errors="replace") for p in bundles)
    lists = [re.search(r"`(" + re.escape(start) + r"[^`]*)`", text) for start in ("alpha.alpha2.", "andromedae.", "a.b.c.")]
    if not all(lists):
        pytest.skip("this Prefect's UI bundle has no run-name word lists where Prefect 3.8's has them")
    letters, places, suffixes = (m.group(1).split(".") for m in lists)
    rng = random.Random(0)
    for _ in range(2000):
        name = "-".join(p for p in (rng.choice(letters).replace("RANDOM", str(rng.randint(1, 99))), rng.choice(places),
                                    rng.choice(suffixes) if rng.random() < 0.6 else "") if p)
        assert flows.generated_name(name), name
    assert flows.generated_name("chi6-alture")
    for typed in ("alphabet-soup", "nightly-rerun", "beta2test"):
        assert not flows.generated_name(typed), typed


def test_a_flow_run_is_named_after_its_model_and_run_id():
    settings = RunSettings(input="/in", output="/out", model="s3://b/models/defects-v3/", run_id="n1")
    assert flows.run_name(settings) == "classify-defects-v3-n1"


def test_a_run_id_from_a_time_and_a_suffix_sorts_by_time():
    assert new_run_id(datetime(2026, 12, 8, 2, 0, tzinfo=timezone.utc), suffix="3fa2b1") == "20261208T020000Z-3fa2b1"
    assert len(new_run_id().split("-")[1]) == 6


@pytest.mark.parametrize(
    ("uri", "endpoint", "expected"),
    [
        ("s3://bucket/out/r1", None, "https://s3.console.aws.amazon.com/s3/buckets/bucket?prefix=out/r1/"),
        ("s3://anonymous@bucket/a b/r1", None, "https://s3.console.aws.amazon.com/s3/buckets/bucket?prefix=a%20b/r1/"),
        ("s3://bucket/out/r1", "http://127.0.0.1:9000", None),  # MinIO, moto: no console to derive
        ("/data/out/r1", None, None),  # a local folder: the path as text, never file://
        ("https://example.com/runs/r1", None, "https://example.com/runs/r1"),
    ],
)
def test_links_a_browser_opens(uri, endpoint, expected):
    assert browser_url(uri, StorageOptions(endpoint_url=endpoint)) == expected
