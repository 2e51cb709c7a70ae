import math

import numpy as np
import pytest

from batch_classify.report.policy import RegressionPolicy
from batch_classify.report.compare import compare
from batch_classify.report.markdown import render_markdown
from batch_classify.report.metrics import accuracy, label_free, prediction_distribution
from batch_classify.models.vocabulary import from_names, imagenet


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
    assert by[0]["wnid"] == "n01440764" and r["confusions"][0]["true_wnid"] == "n01440764"


def test_accuracy_of_a_model_with_its_own_classes_has_no_wnids():
    vocabulary = from_names(["cat", "dog", "fox"])
    r = accuracy(np.array([0, 0, 2]), np.array([0, 1, 2]), np.array([[0, 1, 2, 0, 0], [1, 0, 2, 0, 0], [2, 0, 1, 0, 0]]),
                 vocabulary)
    assert r["top1"] == pytest.approx(2 / 3) and r["top5"] == 1.0
    assert [(c["name"], c["wnid"]) for c in r["per_class"]] == [("cat", None), ("dog", None), ("fox", None)]
    assert r["confusions"] == [
        {"true_index": 0, "true_wnid": None, "true_name": "cat", "pred_index": 1, "pred_name": "dog", "count": 1}]


def test_unlabelled_gives_no_accuracy():
    r = accuracy(np.array([-1, -1]), np.array([3, 4]), np.zeros((2, 5), dtype=np.int64), imagenet())
    assert r["top1"] is None and r["top5"] is None and r["per_class"] == []


def test_markdown_names_figures():
    r = accuracy(np.array([0, 1]), np.array([0, 0]), np.array([[0, 1, 2, 3, 4]] * 2), imagenet())
    r.update(run_id="r1", model="m", input="in", run_uri="out/r1", n_listed=3, n_predicted=2, n_failed=1,
             n_ignored=0, wall_seconds=2.0, images_per_second=1.5)
    md = render_markdown(r)
    assert "**50.0%**" in md and "**100.0%**" in md and "| failed | 1 |" in md and "goldfish" in md
    assert "| class | wnid | support | precision | recall |" in md and "| tench | `n01440764` |" in md
    assert "| goldfish (`n01443537`) | tench | 1 |" in md  # the confusion names the true class's wnid


def test_restricted_accuracy_by_hand():
    from batch_classify.report.metrics import restricted_accuracy

    labels = np.array([0, 0, 5, 5, -1, 7])
    restricted = np.array([0, 5, 5, 5, 3, -1])  # last: not computed (reused from other label classes)
    got = restricted_accuracy(labels, restricted)
    assert got == {"restricted_top1": 0.75, "n_restricted": 4, "n_label_classes": 3}
    assert restricted_accuracy(np.array([-1]), np.array([-1]))["restricted_top1"] is None


# ---------------------------------------------------------------- label-free statistics


def test_label_free_by_hand():
    names = np.array(["cat", "dog", "cat", "bird", "cat", "dog"], dtype=object)
    # exactly representable in float32, so the bins below are exact: 20 bins of 0.05
    conf = np.array([1.0, 0.5, 0.375, 0.0, 0.75, 0.25], dtype=np.float32)
    entropy = np.array([0.1, np.nan, 0.5, np.nan, 0.3, np.inf], dtype=np.float32)  # unknown rows are skipped
    got = label_free(names, conf, entropy, low_confidence=0.5, top_classes=2)
    assert got["prediction_distribution"] == [
        {"name": "cat", "count": 3, "share": 0.5}, {"name": "dog", "count": 2, "share": pytest.approx(1 / 3)}]
    assert got["n_predicted_classes"] == 3
    hist = got["confidence_histogram"]
    assert len(hist["edges"]) == 21 and hist["edges"][0] == 0.0 and hist["edges"][-1] == 1.0
    assert hist["edges"][3] == 0.15  # i / 20, not an accumulated float
    assert [i for i, c in enumerate(hist["counts"]) if c] == [0, 5, 7, 10, 15, 19] and sum(hist["counts"]) == 6
    assert got["mean_confidence"] == pytest.approx(2.875 / 6)
    # 0.375, 0.0 and 0.25 are under 0.5; 0.5 itself is not
    assert got["low_confidence_threshold"] == 0.5 and got["n_low_confidence"] == 3 and got["low_confidence_share"] == 0.5
    assert got["mean_entropy"] == pytest.approx(0.3, abs=1e-6) and got["n_entropy"] == 3
    assert math.isfinite(got["mean_entropy"])


def test_label_free_of_nothing_and_without_entropy():
    got = label_free(np.array([], dtype=object), np.zeros(0, np.float32), None, low_confidence=0.5)
    assert got["prediction_distribution"] == [] and got["n_predicted_classes"] == 0
    assert got["confidence_histogram"]["counts"] == [0] * 20
    assert got["mean_confidence"] is None and got["low_confidence_share"] is None and got["n_low_confidence"] == 0
    assert got["mean_entropy"] is None and got["n_entropy"] == 0
    old = label_free(np.array(["a"], dtype=object), np.array([0.9], np.float32), np.array([np.nan], np.float32),
                     low_confidence=0.5)
    assert old["mean_entropy"] is None and old["mean_confidence"] == pytest.approx(0.9)
    with pytest.raises(ValueError, match="confidence"):
        label_free(np.array(["a", "b"], dtype=object), np.array([0.9], np.float32), None, low_confidence=0.5)
    with pytest.raises(ValueError, match="confidences"):
        label_free(np.array(["a"], dtype=object), np.array([1.5], np.float32), None, low_confidence=0.5)
    with pytest.raises(ValueError, match="low_confidence"):
        label_free(np.array(["a"], dtype=object), np.array([0.5], np.float32), None, low_confidence=50)


def test_prediction_distribution_ties_by_name():
    got = prediction_distribution(np.array(["b", "a", "c", "c"], dtype=object), top_classes=3)
    assert [(r["name"], r["count"]) for r in got] == [("c", 2), ("a", 1), ("b", 1)]


# ---------------------------------------------------------------- against the previous run


def _names(*groups: tuple[str, int]) -> np.ndarray:
    return np.array([name for name, k in groups for _ in range(k)], dtype=object)


UNLABELLED = {"top1": None, "top5": None, "per_class": [], "confusions": []}


def test_unlabelled_runs_are_gated_on_drift():
    current = {**UNLABELLED, "model": "new", "mean_confidence": 0.6}
    previous = {**UNLABELLED, "model": "old", "mean_confidence": 0.8}
    now = _names(("cat", 6), ("dog", 4))  # cat 0.6, dog 0.4
    before = _names(("cat", 3), ("dog", 3), ("fox", 4))  # cat 0.3, dog 0.3, fox 0.4
    # TVD = 0.5 * (0.3 + 0.1 + 0.4) = 0.4
    over = compare(current, previous, now, before, previous_run_uri="out/r0", policy=RegressionPolicy(0.02, 0.3))
    assert over["top1_delta"] is None and over["drift_tvd"] == pytest.approx(0.4)
    assert over["regressed"] is True and over["reasons"] == ["prediction drift (TVD) 0.400, over max_drift = 0.3"]
    assert over["drift_threshold"] == 0.3 and over["threshold"] == 0.02
    assert over["previous_model"] == "old" and over["previous_run_uri"] == "out/r0"
    assert over["mean_confidence_delta"] == pytest.approx(-0.2)
    assert [(c["name"], c["share_before"], c["share_after"]) for c in over["share_changes"]] == [
        ("cat", 0.3, 0.6), ("dog", 0.3, 0.4), ("fox", 0.4, 0.0)]  # gains first, then losses
    assert [c["delta"] for c in over["share_changes"]] == pytest.approx([0.3, 0.1, -0.4])

    under = compare(current, previous, now, before, previous_run_uri="out/r0", policy=RegressionPolicy(0.02, 0.5))
    assert under["regressed"] is False and under["reasons"] == []
    off = compare(current, previous, now, before, previous_run_uri="out/r0", policy=RegressionPolicy(0.02, None))
    assert off["regressed"] is False and off["drift_threshold"] is None and off["drift_tvd"] == pytest.approx(0.4)

    # One side labelled is not enough to compare top-1: the drift gate applies.
    half = compare({**current, "top1": 0.9}, previous, now, before, previous_run_uri="out/r0", policy=RegressionPolicy(0.02, 0.3))
    assert half["top1_delta"] is None and half["regressed"] is True


def test_labelled_runs_are_gated_on_accuracy_not_drift():
    now, before = _names(("cat", 5)), _names(("dog", 5))  # disjoint: TVD 1
    better = compare({"top1": 0.9, "top5": 1.0, "per_class": []}, {"top1": 0.5, "top5": 1.0, "per_class": []}, now, before,
                     previous_run_uri="p", policy=RegressionPolicy(0.02, 0.1))
    assert better["drift_tvd"] == 1.0 and better["top1_delta"] == pytest.approx(0.4)
    assert better["regressed"] is False and better["reasons"] == []
    worse = compare({"top1": 0.5, "top5": 0.75, "per_class": []}, {"top1": 0.75, "top5": 1.0, "per_class": []}, now,
                    now, previous_run_uri="p", policy=RegressionPolicy(0.02, 0.1))
    assert worse["regressed"] is True and worse["drift_tvd"] == 0.0 and worse["share_changes"] == []
    assert worse["reasons"] == ["top-1 dropped by 25.0 points, over max_top1_drop = 0.02 (2.0 points)"]
    assert worse["top5_delta"] == pytest.approx(-0.25)
    # An older previous report has no mean confidence: no change is made up.
    assert worse["mean_confidence_delta"] is None


def test_runs_of_models_with_different_classes_compare_by_name():
    a, b = from_names(["cat", "dog", "fox"]), from_names(["fox", "cat"])  # "cat" is index 0 in one, 1 in the other
    now = np.asarray(a.names, dtype=object)[[0, 0, 1]]  # cat 2/3, dog 1/3
    before = np.asarray(b.names, dtype=object)[[1, 1, 0]]  # cat 2/3, fox 1/3
    got = compare(UNLABELLED, UNLABELLED, now, before, previous_run_uri="p", policy=RegressionPolicy(0.02, 0.5))
    assert got["drift_tvd"] == pytest.approx(1 / 3) and got["regressed"] is False
    assert [c["name"] for c in got["share_changes"]] == ["dog", "fox"]  # equal moves: by name; cat did not move

    # Nothing predicted on one side: no drift, no share changes, no gate.
    empty = compare(UNLABELLED, UNLABELLED, now, np.array([], dtype=object), previous_run_uri="p", policy=RegressionPolicy(0.02, 0.0))
    assert empty["drift_tvd"] is None and empty["share_changes"] == [] and empty["regressed"] is False


def test_share_changes_name_the_largest_gains_and_losses_ties_by_name():
    now = np.array(list("lkjihgfedcba") + ["y"] * 4, dtype=object)  # twelve names at 1/16, y at 4/16
    before = np.array(["z"] * 12 + ["x"] * 3 + ["y"], dtype=object)  # z at 12/16, x 3/16, y 1/16
    got = compare(UNLABELLED, UNLABELLED, now, before, previous_run_uri="p", policy=RegressionPolicy(0.02, None))
    moves = [(c["name"], round(16 * c["delta"])) for c in got["share_changes"]]
    assert moves == [("y", 3), ("a", 1), ("b", 1), ("c", 1), ("d", 1), ("z", -12), ("x", -3)]
    assert got["drift_tvd"] == pytest.approx(15 / 16)
    shares = got["class_shares"]  # both distributions, side by side: the classes largest in either run
    assert [c["name"] for c in shares[:3]] == ["z", "y", "x"] and len(shares) == 15
    assert (shares[1]["share_before"], shares[1]["share_after"]) == (1 / 16, 4 / 16)


def test_per_class_delta_matches_by_wnid_else_by_name():
    mine = from_names(["dog", "cat", "crane"])
    y, p = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2])
    current = accuracy(y, p, np.tile(p[:, None], 5), mine)  # dog 1/2, cat 1, crane 1
    older = from_names(["cat", "dog", "emu"])
    y0, p0 = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 1, 2])
    previous = accuracy(y0, p0, np.tile(p0[:, None], 5), older)  # cat 1/3, dog 1, emu 1
    got = compare(current, previous, np.array(["dog"]), np.array(["dog"]), previous_run_uri="p", policy=RegressionPolicy(0.02, None))
    rows = [(r["name"], r["wnid"], r["recall_before"], r["recall_after"]) for r in got["per_class_delta"]]
    assert rows == [("dog", None, 1.0, 0.5), ("cat", None, pytest.approx(1 / 3), 1.0)]  # largest drop first
    assert got["per_class_delta"][0]["delta"] == -0.5

    # ImageNet entries match by wnid: the same name under another wnid is another class; against a model's own
    # "crane" (no wnid) the ImageNet crane (the machine, n03126707) matches by name.
    names = imagenet().names
    crane, bird = names.index("crane"), names.index("crane bird")
    inet = accuracy(np.array([bird, crane]), np.array([bird, bird]), np.tile(np.array([[bird]]), (2, 5)), imagenet())
    inet_before = accuracy(np.array([crane]), np.array([crane]), np.tile(np.array([[crane]]), (1, 5)), imagenet())
    got = compare(inet, inet_before, np.array(["crane"]), np.array(["crane"]), previous_run_uri="p", policy=RegressionPolicy(0.02, None))
    assert [(r["wnid"], r["recall_before"], r["recall_after"]) for r in got["per_class_delta"]] == [("n03126707", 1.0, 0.0)]
    other = {"per_class": [{**inet_before["per_class"][0], "wnid": "n99999999"}]}  # same name, another wnid
    got = compare(inet, other, np.array(["crane"]), np.array(["crane"]), previous_run_uri="p", policy=RegressionPolicy(0.02, None))
    assert got["per_class_delta"] == []
    got = compare(current, inet_before, np.array(["crane"]), np.array(["crane"]), previous_run_uri="p", policy=RegressionPolicy(0.02, None))
    assert [(r["name"], r["wnid"], r["delta"]) for r in got["per_class_delta"]] == [("crane", None, 0.0)]
    # A name that several classes of the previous run share is ambiguous: not matched, not guessed.
    twice = from_names(["crane", "crane"])
    both = accuracy(np.array([0, 1]), np.array([0, 1]), np.array([[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]), twice)
    got = compare(current, both, np.array(["crane"]), np.array(["crane"]), previous_run_uri="p", policy=RegressionPolicy(0.02, None))
    assert [r["name"] for r in got["per_class_delta"]] == []


# ---------------------------------------------------------------- Markdown


def _base(**extra) -> dict:
    return {"run_id": "r2", "model": "my-model", "input": "s3://b/in/", "run_uri": "s3://b/out/r2", "n_listed": 10,
            "n_predicted": 10, "n_failed": 0, "n_ignored": 0, "wall_seconds": 2.0, "images_per_second": 5.0, **extra}


def test_markdown_of_an_unlabelled_run_of_a_model_with_its_own_classes():
    vocabulary = from_names(["Cat | tabby", "dog", "fox"])
    pred = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2])
    names = np.asarray(vocabulary.names, dtype=object)[pred]
    conf = np.array([0.9, 0.8, 0.25, 0.3, 0.95, 0.4, 0.7, 0.45, 0.6, 0.5], np.float32)
    report = _base(
        **accuracy(np.full(10, -1), pred, np.tile(pred[:, None], 5), vocabulary),
        **label_free(names, conf, np.full(10, 0.7, np.float32), low_confidence=0.5),
        unlabelled_reason="folder names are not class names; the run is unlabelled",
    )
    previous = {**UNLABELLED, "model": "old", "mean_confidence": 0.9}
    report["comparison"] = compare(report, previous, names, np.array(["fox"] * 10, dtype=object),
                                   previous_run_uri="s3://b/out/r1", policy=RegressionPolicy(0.02, 0.25))
    md = render_markdown(report)
    lines = md.splitlines()
    # The verdict first, in the settings' own names; then the figures of an unlabelled run; no row without a value.
    assert lines[2] == ("**Regressed:** prediction drift (TVD) 0.900, over max_drift = 0.25, against run s3://b/out/r1. "
                        "The predictions and the report are committed: the results are valid.")
    assert "| prediction drift (TVD) | 0.900 (max_drift = 0.25) |" in lines[4:12]
    assert "| low confidence | 40.0% under 0.50 (4 images) |" in lines[4:12]
    assert "n/a" not in md and "top-1" not in md.split("## This run")[1].split("##")[0]
    assert "one image is 10.0 points of a share" in md  # 10 images: a small sample, said so
    assert md.count("folder names are not class names; the run is unlabelled") == 1
    assert md.index("the run is unlabelled") < md.index("| model |")  # near the top
    assert "## Predictions (no labels needed)" in md
    assert "40.0% under 0.50 (4 images)" in md  # 0.25, 0.3, 0.4, 0.45; 0.5 is not under 0.50
    assert "mean entropy of the predicted distribution: 0.700 nats" in md
    assert "mean confidence (probability of the top-1 class): 58.5%" in md
    assert "| Cat \\| tabby | 6 | 60.0% |" in md and "| dog | 3 | 30.0% |" in md  # "|" escaped in a cell
    assert "prediction drift (total variation distance of the predicted classes): 0.900" in md
    assert "**REGRESSION: prediction drift (TVD) 0.900, over max_drift = 0.25**" in md
    assert "| Cat \\| tabby | 0.0% | 60.0% | +60.0 points |" in md
    assert "- mean confidence: -31.5 points" in md
    assert "wnid" not in md and "(`" not in md


def test_markdown_of_a_labelled_run_of_a_model_with_its_own_classes_has_no_wnid_column():
    vocabulary = from_names(["cat", "dog"])
    y, p = np.array([0, 0, 1]), np.array([0, 1, 1])
    report = _base(**accuracy(y, p, np.tile(p[:, None], 5), vocabulary))
    md = render_markdown(report)
    assert "| class | support | precision | recall |" in md and "| cat | 2 | 100.0% (n=1) | 50.0% (n=2) |" in md
    assert "(n=…): a precision or recall over fewer than 30 images, a small sample." in md
    assert "| cat | dog | 1 |" in md  # the confusion, no wnid
    assert "wnid" not in md and "(`" not in md and "Predictions (no labels needed)" not in md  # an older report


# ---------------------------------------------------------------- verdict, small samples, images to look at


def test_verdict_words_each_outcome_with_the_settings_names():
    from batch_classify.report.verdict import key_figures, verdict

    base = _base(n_labelled=0, top1=None, mean_confidence=0.7, low_confidence_share=0.2, low_confidence_threshold=0.5,
                 n_low_confidence=2)
    assert verdict(base)["status"] == "no baseline" and verdict(base)["line"].startswith("No baseline: ")
    cmp = {"previous_run_uri": "s3://b/out/r1", "previous_run_id": "r1", "top1_delta": None, "drift_tvd": 0.05,
           "drift_threshold": 0.1, "threshold": 0.02, "regressed": False, "reasons": [], "n_compared": 10, "n_changed": 1}
    healthy = verdict({**base, "comparison": cmp})
    assert healthy == {"status": "healthy", "line": "Healthy: prediction drift (TVD) 0.050 against run r1, within max_drift = 0.1."}
    regressed = verdict({**base, "n_failed": 2, "comparison": {**cmp, "drift_tvd": 0.3, "regressed": True,
                                                               "reasons": ["prediction drift (TVD) 0.300, over max_drift = 0.1"]}})
    assert regressed["status"] == "regressed" and regressed["line"] == (
        "Regressed: prediction drift (TVD) 0.300, over max_drift = 0.1, against run r1. The predictions and the report "
        "are committed: the results are valid. 2 of 10 listed images failed (see failures).")
    labelled = verdict({**base, "comparison": {**cmp, "top1_delta": 0.01}})
    assert labelled["line"] == "Healthy: top-1 +1.0 points against run r1, within max_top1_drop = 0.02."
    # The key figures of an unlabelled run: no top-1, the drift and the changes; nothing missing.
    figures = dict(key_figures({**base, "comparison": cmp}))
    assert "top-1" not in figures and figures["prediction drift (TVD)"] == "0.050 (max_drift = 0.1)"
    assert figures["predictions changed"] == "1 of the 10 images both runs predicted"
    assert figures["low confidence"] == "20.0% under 0.50 (2 images)" and "n/a" not in str(figures)


def test_small_samples_are_named_with_their_counts():
    from batch_classify.report.samples import MIN_IMAGES, few, interval_points, small_sample_notes

    assert (few(0), few(1), few(MIN_IMAGES - 1), few(MIN_IMAGES), few(None)) == (False, True, True, False, False)
    assert round(interval_points(MIN_IMAGES), 1) == 17.9  # 1.96 * sqrt(0.25 / 30), in points
    notes = small_sample_notes({"n_labelled": 20, "ece": 0.249, "n_predicted": 20, "comparison": {"n_compared": 20},
                                "per_class": [{"support": 1}, {"support": 40}, {"support": 0}]})
    assert len(notes) == 5 and "over 20 labelled images, fewer than 30" in notes[0]
    assert "(ECE) is over 20 labelled images, fewer than 150 (10 per bin)" in notes[1]
    assert notes[2].startswith("1 of the 2 label classes have fewer than 30 images")
    big = {"n_labelled": 5000, "ece": 0.02, "n_predicted": 5000, "comparison": {"n_compared": 5000},
           "per_class": [{"support": 50}] * 100}
    assert small_sample_notes(big) == []


def test_lowest_confidence_and_changed_predictions():
    import pyarrow as pa

    from batch_classify.report.review import changed_predictions, lowest_confidence

    now = pa.table({"path": ["a", "b", "c", "d"], "pred_label": ["cat", "dog", "fox", "cat"],
                    "confidence": pa.array([0.9, 0.2, 0.2, 0.6], pa.float32())})
    before = pa.table({"path": ["a", "b", "c", "e"], "pred_label": ["cat", "cat", "owl", "cat"],
                       "confidence": pa.array([0.8, 0.7, 0.5, 0.9], pa.float32())})
    assert [(r["path"], r["confidence"]) for r in lowest_confidence(now, 3)] == [("b", 0.2), ("c", 0.2), ("d", 0.6)]
    assert lowest_confidence(now, 0) == [] and len(lowest_confidence(now, 10)) == 4
    rows, n = changed_predictions(now, before)
    assert n == 2 and [(r["path"], r["before"], r["after"]) for r in rows] == [("b", "cat", "dog"), ("c", "owl", "fox")]
    assert rows[0]["confidence_before"] == 0.7 and changed_predictions(now, before, limit=1) == (rows[:1], 2)


def test_the_report_says_where_the_stage_ran():
    from batch_classify.report.format import device

    assert device({"device": "cpu", "num_actors": 1, "executor": "ray"}) == "cpu × 1 actors"
    assert device({"device": "cuda", "num_actors": 4}) == "cuda × 4 actors"  # a report from before issue 28
    assert device({"device": "cpu", "num_actors": 1, "executor": "local", "precision": "int8"}) == "cpu, in the run's process, int8"
    assert device({"device": None}) == "n/a"
