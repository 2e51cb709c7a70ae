"""How the report prints numbers: the one percent formatter and its companions, used by the Markdown,
the page, the pictures and the command line alike.

Every formatter prints ``n/a`` for a value that is missing (None, e.g. an unlabelled run's accuracy
or a field an older ``report.json`` lacks) or NaN.
"""

from __future__ import annotations

#: What a missing value reads as, everywhere.
NA = "n/a"


def missing(value) -> bool:
    """True for None and NaN (float, numpy float; NaN is the one value unequal to itself)."""
    return value is None or value != value


def pct(fraction, digits: int = 1) -> str:
    """A fraction as a percentage: ``pct(0.1234)`` is ``"12.3%"``, ``pct(0.1234, 0)`` ``"12%"``."""
    return NA if missing(fraction) else f"{100 * fraction:.{digits}f}%"


def points(fraction, sign: str = "+") -> str:
    """A fraction (a change, signed by default; ``sign=""`` for a plain size) in percentage points:
    ``points(-0.021)`` is ``"-2.1 points"``, ``points(0.02, sign="")`` ``"2.0 points"``."""
    return NA if missing(fraction) else f"{100 * fraction:{sign}.1f} points"


def num(value, fmt: str = "{}") -> str:
    """Any value through ``fmt`` (``str.format``): ``num(12.34, "{:.1f} s")`` is ``"12.3 s"``."""
    return NA if missing(value) else fmt.format(value)


def under(path: str, root: str | None) -> str:
    """``path`` relative to the folder ``root`` when it lies under it (how the report names an image of
    the run's input), else ``path`` as given."""
    prefix = (root or "").rstrip("/") + "/"
    return path[len(prefix):] if root and path.startswith(prefix) else path


def when(iso: str | None) -> str:
    """An ISO 8601 time as the report prints it, to the minute: ``2026-12-07 06:52``; ``""`` for None."""
    return str(iso or "")[:16].replace("T", " ")


def device(report: dict) -> str:
    """Where a report's stage ran, as the report prints it: ``cpu × 1 actors`` (Ray Data's actor pool),
    ``cpu, in the run's process`` (``--executor local``), with ``, int8`` for ``--precision int8``; ``n/a``
    where nothing was computed (every image reused)."""
    if not report.get("device"):
        return NA
    where = ("in the run's process" if report.get("executor") == "local"
             else f"× {report.get('num_actors') or '?'} actors")
    sep = ", " if report.get("executor") == "local" else " "
    return f"{report['device']}{sep}{where}" + (", int8" if report.get("precision") == "int8" else "")
