"""ImageNet-1k class vocabulary: index ⇄ wnid ⇄ human-readable names.

Sources: the 1000 wnids in sorted order (index = position in that list) and
their WordNet lemmas come from timm's ``ImageNetInfo`` (shipped with the timm
package, no download); the short display names are torchvision's ImageNet
category names (``weights.meta["categories"]``), in the same class order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

WNID_RE = re.compile(r"^n\d{8}$")


def _norm(name: str) -> str:
    """Lower case, underscores and runs of spaces made one space: ``Great_White shark`` → ``great white shark``."""
    return " ".join(name.replace("_", " ").lower().split())


class LabelError(ValueError):
    """Labels that cannot be mapped onto the model's classes."""


@dataclass(frozen=True)
class Vocabulary:
    """Class vocabulary of a 1000-way ImageNet classifier.

    Attributes:
        wnids: 1000 WordNet ids in class-index order (sorted).
        names: 1000 short display names in class-index order (``"tench"``).
    """

    wnids: tuple[str, ...]
    names: tuple[str, ...]
    _tiers: tuple[dict[str, set[int]], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        lemmas = _timm_lemmas()
        wnid: dict[str, set[int]] = {}
        exact: dict[str, set[int]] = {}
        normed: dict[str, set[int]] = {}
        lemma: dict[str, set[int]] = {}
        for index, (w, name) in enumerate(zip(self.wnids, self.names, strict=True)):
            wnid.setdefault(w.lower(), set()).add(index)
            exact.setdefault(name.replace("_", " "), set()).add(index)
            normed.setdefault(_norm(name), set()).add(index)
            for term in lemmas.get(w, "").split(","):
                lemma.setdefault(_norm(term), set()).add(index)
        object.__setattr__(self, "_tiers", (wnid, exact, normed, lemma))

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    def lookup(self, label: str) -> int:
        """Class index of a label, tried in this order: a wnid (``n01440764``), a class
        name as torchvision spells it (``Cardigan`` the dog, ``cardigan`` the sweater;
        ``_`` for spaces), the same name in any case, a WordNet lemma (``Tinca tinca``).

        Raises:
            LabelError: unknown label, or a name shared by several classes (e.g. ``crane``).
        """
        wnid, exact, normed, lemma = self._tiers
        key = label.strip()
        hits = (
            wnid.get(key.lower())
            or exact.get(" ".join(key.replace("_", " ").split()))
            or normed.get(_norm(key))
            or lemma.get(_norm(key))
        )
        if not hits:
            raise LabelError(f"label {label!r} is no ImageNet wnid or class name")
        if len(hits) > 1:
            which = ", ".join(f"{self.wnids[i]} ({self.names[i]})" for i in sorted(hits))
            raise LabelError(f"label {label!r} names several ImageNet classes: {which}; use the wnid")
        return next(iter(hits))

    def map_labels(self, labels: set[str]) -> dict[str, int]:
        """Map every distinct label to a class index.

        Raises:
            LabelError: naming every label that does not map (up to 20) and how to fix it.
        """
        mapping: dict[str, int] = {}
        problems: list[str] = []
        for label in sorted(labels):
            try:
                mapping[label] = self.lookup(label)
            except LabelError as err:
                problems.append(str(err))
        if problems:
            shown = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
            raise LabelError(
                f"{len(problems)} of {len(labels)} labels do not map onto the model's classes: {shown}. "
                "Name folders by wnid (e.g. n01440764) or pass --labels with a path,label manifest."
            )
        return mapping


def _timm_info_file(name: str) -> str:
    """Text of one of timm's ImageNet metadata files (``timm/data/_info``), read without importing
    timm: ``import timm.data`` adds 0.38 s of start-up after torch and torchvision (development machine)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the timm package is not installed; it supplies the ImageNet wnids (pip install timm)")
    with open(os.path.join(spec.submodule_search_locations[0], "data", "_info", name), encoding="utf-8") as f:
        return f.read()


@lru_cache(maxsize=1)
def _timm_lemmas() -> dict[str, str]:
    """wnid → comma-separated WordNet lemmas, as timm's ``ImageNetInfo.index_to_description``."""
    pairs = (line.split("\t", 1) for line in _timm_info_file("imagenet_synset_to_lemma.txt").splitlines() if line)
    return {w: lemma.strip() for w, lemma in pairs}


@lru_cache(maxsize=1)
def imagenet() -> Vocabulary:
    """The ImageNet-1k vocabulary (1000 classes)."""
    from torchvision.models import ResNet50_Weights

    wnids = tuple(_timm_info_file("imagenet_synsets.txt").split())
    names = tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])
    if len(wnids) != 1000 or len(names) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("ImageNet class metadata from timm/torchvision is not the expected 1000 sorted wnids")
    return Vocabulary(wnids=wnids, names=names)
