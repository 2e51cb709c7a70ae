import numpy as np
import pytest

from batch_classify.report import accuracy, render_markdown
from batch_classify.vocabulary import imagenet


def test_known_confusion():
    # true: 0,0,0,1,1,2 ; predicted: 0,0,1,1,1,0 ; one unlabelled row (-1) is skipped
    y = np.array([0, 0, 0, 1, 1, 2, -1])
    p = np.array([0, 0, 1, 1, 1, 0, 5])
    t5 = np.array([[p_, 2, 3, 4, 9] for p_ in p])
    r = accuracy(y, p, t5, imagenet())
    assert r["n_labelled"] == 6
    assert r["top1"] == pytest.approx(4 / 6)
    assert r["top5"] == pytest.approx(5 / 6)  # the row true=2/pred=0 has 2 in its top-5
    by = {c["index"]: c for c in r["per_class"]}
    assert set(by) == {0, 1, 2}
    assert (by[0]["support"], by[0]["predicted"], by[0]["correct"]) == (3, 3, 2)
    assert by[0]["precision"] == pytest.approx(2 / 3) and by[0]["recall"] == pytest.approx(2 / 3)
    assert by[1]["precision"] == pytest.approx(2 / 3) and by[1]["recall"] == pytest.approx(1.0)
    assert by[2]["precision"] is None and by[2]["recall"] == 0.0
    assert [(c["true_index"], c["pred_index"], c["count"]) for c in r["confusions"]] == [(0, 1, 1), (2, 0, 1)]


def test_unlabelled_gives_no_accuracy():
    r = accuracy(np.array([-1, -1]), np.array([3, 4]), np.zeros((2, 5), dtype=np.int64), imagenet())
    assert r["top1"] is None and r["top5"] is None and r["per_class"] == []


def test_markdown_names_figures():
    r = accuracy(np.array([0, 1]), np.array([0, 0]), np.array([[0, 1, 2, 3, 4]] * 2), imagenet())
    r.update(run_id="r1", model="m", input="in", run_uri="out/r1", n_listed=3, n_predicted=2, n_failed=1,
             n_ignored=0, wall_seconds=2.0, images_per_second=1.5)
    md = render_markdown(r)
    assert "**50.0%**" in md and "**100.0%**" in md and "| failed | 1 |" in md and "goldfish" in md


def test_restricted_accuracy_by_hand():
    from batch_classify.report import restricted_accuracy

    labels = np.array([0, 0, 5, 5, -1, 7])
    restricted = np.array([0, 5, 5, 5, 3, -1])  # last: not computed (reused from other label classes)
    got = restricted_accuracy(labels, restricted)
    assert got == {"restricted_top1": 0.75, "n_restricted": 4, "n_label_classes": 3}
    assert restricted_accuracy(np.array([-1]), np.array([-1]))["restricted_top1"] is None
