"""The shared ImageNet photos: where they are and how tests lay them out.

The folder is ``../shared/imagenet-sample`` beside the project root unless ``pytest --photos DIR``
names another (``tests/conftest.py``); tests that need photos skip, with the reason, where it is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Where the 500 photos are by default: ``<project>/../shared/imagenet-sample``.
DEFAULT_PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "imagenet-sample"


def missing_reason(folder: Path) -> str:
    """Why tests that need photos skip."""
    return f"the shared ImageNet photos are not at {folder} (a clone without ../shared beside it; or pass --photos DIR)"


def arrange_in_wnid_folders(photos: list[Path], root: Path) -> Path:
    """Copy photos to ``root/<wnid>/<file>``, as in Imagenette and ImageFolder."""
    for p in photos:
        (root / p.name[:9]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, root / p.name[:9] / p.name)
    return root


def linked_copies(photos: list[Path], root: Path, copies: int = 3) -> Path:
    """``photos`` hard-linked ``copies`` times as ``root/camera-K/<file>`` (no labels in the path): 1,500
    files from the shared 500, enough for a stage of several seconds to stop, cancel or break in."""
    for copy in range(copies):
        folder = root / f"camera-{copy}"
        folder.mkdir(parents=True)
        for p in photos:
            os.link(p, folder / p.name)
    return root
