"""Small samples: when a figure of the report rests on too few images to be read as a measurement.

The report marks such figures with their count (``100.0% (n=1)``) and lists one note per figure
(:func:`small_sample_notes`, ``report.json``'s ``small_samples``), under the verdict.
"""

from __future__ import annotations

from batch_classify.report.metrics import DEFAULT_BINS

#: A proportion (a class's recall or precision, a run's top-1) over fewer images than this is a small
#: sample, marked with its count: its 95% interval is then wider than ±18 points at a proportion of
#: one half (the normal approximation, 1.96 × √(0.25 / 30) = 0.179), the usual rule of thumb of 30.
MIN_IMAGES = 30
#: The ECE over fewer labelled images than this (10 per bin on average over :data:`DEFAULT_BINS`
#: bins) is a small sample: most bins then hold a few images or none, and the ECE of even a
#: calibrated model is biased upward, of the order of 1/√N.
MIN_CALIBRATION_IMAGES = 10 * DEFAULT_BINS


def interval_points(n: int) -> float:
    """Half the width of the 95% interval of a proportion of one half over ``n`` images, in percentage
    points (the normal approximation, 1.96 × √(0.25 / n)); the widest a proportion's interval gets."""
    return 100 * 1.96 * (0.25 / n) ** 0.5


def few(n) -> bool:
    """Whether a proportion over ``n`` images is a small sample (0 < n < :data:`MIN_IMAGES`)."""
    return n is not None and 0 < n < MIN_IMAGES


def small_sample_notes(report: dict) -> list[str]:
    """One sentence per figure of ``report`` that rests on a small sample (:data:`MIN_IMAGES`,
    :data:`MIN_CALIBRATION_IMAGES`), naming the count; empty when none does.

    Reads ``n_labelled``, ``ece``, ``per_class``, ``n_predicted`` and ``comparison.n_compared``."""
    notes = []
    n_labelled = report.get("n_labelled") or 0
    if few(n_labelled):
        notes.append(f"top-1 and top-5 are over {n_labelled} labelled images, fewer than {MIN_IMAGES}: "
                     f"their 95% interval is up to ±{interval_points(n_labelled):.0f} points wide")
    if report.get("ece") is not None and n_labelled < MIN_CALIBRATION_IMAGES:
        notes.append(f"the calibration error (ECE) is over {n_labelled} labelled images, fewer than "
                     f"{MIN_CALIBRATION_IMAGES} ({MIN_CALIBRATION_IMAGES // DEFAULT_BINS} per bin): a rough sign "
                     "that runs high, not a measurement")
    labelled_classes = [c for c in report.get("per_class") or [] if c.get("support")]
    small = [c for c in labelled_classes if few(c["support"])]
    if small:
        notes.append(f"{len(small)} of the {len(labelled_classes)} label classes have fewer than {MIN_IMAGES} images; "
                     "their recall and precision are marked with their count (n=…)")
    n_predicted = report.get("n_predicted") or 0
    if few(n_predicted):
        notes.append(f"the class shares and confidence figures are over {n_predicted} predicted images: "
                     f"one image is {100 / n_predicted:.1f} points of a share")
    n_compared = (report.get("comparison") or {}).get("n_compared")
    if few(n_compared):
        notes.append(f"the comparison with the previous run is over {n_compared} images: one image that changes "
                     f"class moves the prediction drift by {1 / n_compared:.3f}")
    return notes
