"""Input for ``batch-classify demo``: real photographs shipped in scikit-image's wheel.

No download: the files are read from the installed ``skimage/data`` folder and
copied into a local input folder. Only the photographs whose ImageNet class is
unambiguous are labelled (``demo_labels.csv``); the others are classified
without a label. scikit-image is the ``demo`` extra (``pip install 'batch-classify[demo]'``),
not a dependency of a run.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

#: What ``batch-classify demo`` says when scikit-image is not installed.
MISSING_EXTRA = "the demo needs scikit-image's photos: pip install 'batch-classify[demo]'"

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
        ModuleNotFoundError: scikit-image is not installed (the ``demo`` extra); its message is
            :data:`MISSING_EXTRA`.
        FileNotFoundError: scikit-image is installed without its data files.
    """
    try:
        import skimage.data
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] != "skimage":
            raise  # scikit-image is there but one of its own dependencies is not: say which
        raise ModuleNotFoundError(MISSING_EXTRA, name="skimage") from err

    source = Path(skimage.data.__file__).parent
    folder.mkdir(parents=True, exist_ok=True)
    for name in DEMO_PHOTOS:
        if not (source / name).exists():
            raise FileNotFoundError(f"demo photograph {source / name} is missing; reinstall scikit-image")
        shutil.copyfile(source / name, folder / name)
    labels = folder.parent / "demo-labels.csv"
    labels.write_bytes(resources.files("batch_classify").joinpath("demo_labels.csv").read_bytes())
    return folder, labels
