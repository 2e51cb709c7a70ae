"""Input for ``batch-classify demo``: real photographs shipped in scikit-image's wheel.

No download: the files are read from the installed ``skimage/data`` folder and
copied into a local input folder. Only the photographs whose ImageNet class is
unambiguous are labelled (``demo_labels.csv``); the others are classified
without a label.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

#: Photographs (not drawings or micrographs) in scikit-image's data folder.
DEMO_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
)


def prepare_demo_input(folder: Path) -> tuple[Path, Path]:
    """Copy the demo photographs into ``folder`` and write their label manifest beside it.

    Returns:
        (input folder, label manifest path).

    Raises:
        FileNotFoundError: scikit-image is installed without its data files.
    """
    import skimage.data

    source = Path(skimage.data.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for name in DEMO_PHOTOS:
        if not (source / name).exists():
            raise FileNotFoundError(f"demo photograph {source / name} is missing; reinstall scikit-image")
        shutil.copyfile(source / name, folder / name)
    labels = folder.parent / "demo-labels.csv"
    labels.write_bytes(resources.files("batch_classify").joinpath("demo_labels.csv").read_bytes())
    return folder, labels
