"""Lay out what ``benchmarks/gpu_check.sh`` needs on a lent GPU machine with no internet.

Run here, from the project root, beside ``../shared``::

    python3 -m benchmarks.gpu_bundle          # or: python3 benchmarks/gpu_bundle.py

It writes two folders that git ignores (through ``.git/info/exclude``), to be carried:

* ``.whl/``: cp312 manylinux wheels for what the remote lacks: a stripped ``ray`` (no Java
  jar, no dashboard web UI, no rllib/serve/llm/tune/train; its RECORD rewritten to match),
  ``jsonschema`` and its dependencies, ``packaging``, ``efficientnet-lite-pytorch`` (the
  architecture only; the benchmarks use random weights) and, for the ONNX reference figure,
  ``onnx`` (which ``torch.onnx.export`` needs; stripped of its backend test data) with
  ``ml_dtypes`` and the ``protobuf`` it was tested with;
* ``.devdata/photos/``: real ImageNet photos, spread over the shared sample, that the remote
  replicates into a larger input (``benchmarks.common.prepare_input``);
* with ``--lite0-weights``, ``.devdata/efficientnet_lite0-fp16.pth``: EfficientNet-Lite0's real
  ImageNet weights in float16, for the decode parity check (``benchmarks.decode_parity``);
  ``--no-onnx`` leaves out the ONNX wheels to make room.

Prints the bytes that would travel (tracked + untracked-not-ignored files + both folders).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "imagenet-sample"

#: Wheels copied as they are: Ray's requirements that the remote lacks, the EfficientNet-Lite
#: architecture and ONNX's requirements, at the versions tested here.
EXTRA_WHEELS = (
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0",
    "rpds-py==2026.9.1",
    "packaging==26.4",
    "efficientnet-lite-pytorch==0.1.0",
    # batch_classify.settings (imported by engines for its Literal types) and its dependencies.
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "pydantic-settings==2.16.3",
    "annotated-types==0.8.0",
    "typing-inspection==0.4.5",
    "python-dotenv==1.2.4",
    "typing-extensions==4.16.0",
    "ml_dtypes==0.6.0",
    "protobuf==7.36.2",
)
#: Wheels stripped of what these benchmarks never load: ray's Java jar, web UI and libraries
#: other than Ray Data; onnx's backend test data.
STRIPPED_WHEELS = {
    "ray==2.60.0": (
        "ray/jars/",
        "ray/dashboard/client/",
        "ray/rllib/",
        "ray/serve/",
        "ray/llm/",
        "ray/tune/",
        "ray/train/",
    ),
    "onnx==1.23.2": ("onnx/backend/test/",),
}
PLATFORM = [
    "--only-binary=:all:", "--implementation", "cp",
    "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
]


def download(spec: str, dest: Path, python_version: str) -> Path:
    """Download one wheel (no dependencies) for CPython ``python_version`` on x86-64 Linux."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PLATFORM, "--python-version", python_version,
         "-d", str(dest), spec],
        check=True,
    )
    name = spec.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(name + "-")]
    if not found:
        raise SystemExit(f"no wheel for {spec} in {dest} (new: {set(dest.glob('*.whl')) - before})")
    return found[0]


def strip_wheel(src: Path, dest_dir: Path, prefixes: tuple[str, ...]) -> Path:
    """Copy wheel ``src`` into ``dest_dir`` without the entries under ``prefixes``.

    Keeps each entry's ZipInfo (so file modes, e.g. ray's executable gcs_server/raylet, survive)
    and rewrites ``*.dist-info/RECORD`` to list exactly what is left, so pip installs it cleanly.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / src.name
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        kept = [i for i in zin.infolist() if not i.filename.startswith(prefixes) and i.filename != record_name]
        lines = []
        for info in kept:
            data = zin.read(info)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            if not info.is_dir():
                digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                lines.append(f"{info.filename},sha256={digest},{len(data)}")
        lines.append(f"{record_name},,")
        rinfo = zin.getinfo(record_name)
        zout.writestr(rinfo, "\n".join(lines) + "\n", compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tmp.replace(out)
    return out


def exclude(*patterns: str) -> None:
    path = ROOT / ".git" / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    have = path.read_text().splitlines() if path.exists() else []
    with path.open("a") as f:
        for p in patterns:
            if p not in have:
                f.write(p + "\n")


def travelling_bytes(extra: list[Path]) -> int:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    total = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    for folder in extra:
        total += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60, help="photos copied into .devdata/photos")
    parser.add_argument("--python-version", default="3.12", help="the remote's CPython (wheels' tag)")
    parser.add_argument("--cache", default="/tmp/gpu-bundle-cache", help="where the full ray wheel is downloaded")
    parser.add_argument("--no-onnx", action="store_true", help="leave out onnx and its wheels (the ONNX reference figure)")
    parser.add_argument(
        "--lite0-weights", action="store_true",
        help="also carry EfficientNet-Lite0's real ImageNet weights as float16 (9 MiB; the decode parity check)",
    )
    args = parser.parse_args()

    exclude("/.whl/", "/.devdata/")
    whl = ROOT / ".whl"
    shutil.rmtree(whl, ignore_errors=True)
    onnx_only = ("onnx", "ml_dtypes", "protobuf")
    for spec, prefixes in STRIPPED_WHEELS.items():
        if args.no_onnx and spec.startswith(onnx_only):
            continue
        full = download(spec, Path(args.cache) / f"cp{args.python_version.replace('.', '')}", args.python_version)
        stripped = strip_wheel(full, whl, prefixes)
        print(f"{spec}: {full.stat().st_size / 2**20:.1f} MiB -> {stripped.stat().st_size / 2**20:.1f} MiB")
    for spec in EXTRA_WHEELS:
        if args.no_onnx and spec.startswith(onnx_only):
            continue
        download(spec, whl, args.python_version)

    photos_dir = ROOT / ".devdata" / "photos"
    shutil.rmtree(photos_dir, ignore_errors=True)
    photos_dir.mkdir(parents=True)
    photos = sorted(SHARED.glob("*.JPEG"))
    if not photos:
        raise SystemExit(f"no photos under {SHARED}")
    step = max(1, len(photos) // args.photos)
    for p in photos[::step][: args.photos]:
        shutil.copyfile(p, photos_dir / p.name)

    if args.lite0_weights:  # float16 halves the file; load_state_dict converts it back to float32
        import torch

        from batch_classify.models.registry import get_spec
        from batch_classify.storage import StorageOptions, read_bytes

        spec = get_spec("efficientnet_lite0")
        state = torch.load(io.BytesIO(read_bytes(spec.default_weights_path(), StorageOptions())), weights_only=True)
        half = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        torch.save(half, ROOT / ".devdata" / "efficientnet_lite0-fp16.pth")
        print(f"{(ROOT / '.devdata' / 'efficientnet_lite0-fp16.pth').stat().st_size / 2**20:7.2f} MiB  .devdata/efficientnet_lite0-fp16.pth")
    for p in sorted(whl.iterdir()):
        print(f"{p.stat().st_size / 2**20:7.2f} MiB  {p.name}")
    photo_bytes = sum(p.stat().st_size for p in photos_dir.iterdir())
    print(f"{photo_bytes / 2**20:7.2f} MiB  .devdata/photos ({len(list(photos_dir.iterdir()))} photos)")
    total = travelling_bytes([whl, ROOT / ".devdata"])
    print(f"travels: {total / 2**20:.1f} MiB (limit 64 MiB)")


if __name__ == "__main__":
    main()
