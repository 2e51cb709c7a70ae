"""Shared pieces of the benchmarks: the input set, process-tree memory sampling, medians."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

#: The 500 shared ImageNet photos (one per even class index), next to the project.
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "imagenet-sample"


def prepare_input(root: Path, n_files: int, source: Path = SHARED) -> Path:
    """Lay out ``n_files`` files as ``root/copy-K/<wnid>/<file>``, each photo once per copy.

    The files are hard links (copies where linking fails), so every copy reads real bytes
    from disk; the parent folder is the wnid label, as ``batch-classify run`` expects.

    Raises:
        FileNotFoundError: ``source`` is missing (run beside ``../shared``).
    """
    photos = sorted(source.glob("*.JPEG"))
    if not photos:
        raise FileNotFoundError(f"no photos under {source}; the benchmarks need ../shared/imagenet-sample")
    target = root / f"input-{n_files}"
    marker = target / ".complete"
    if marker.exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    for i in range(n_files):
        photo = photos[i % len(photos)]
        dest = target / f"copy-{i // len(photos)}" / photo.name.split("_")[0] / photo.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(photo, dest)
        except OSError:
            shutil.copyfile(photo, dest)
    marker.touch()
    return target


def _tree_pss(proc: psutil.Process) -> int:
    """Proportional set size of a process and all its descendants, bytes (RSS where PSS is unavailable)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


@dataclass
class Measured:
    """One timed command.

    Attributes:
        seconds: wall time from start to exit, seconds.
        peak_bytes: peak PSS of the process tree (Ray's raylet, workers and object store included), bytes.
        returncode: the command's exit status.
        output: its stdout and stderr, merged.
    """

    seconds: float
    peak_bytes: int
    returncode: int
    output: str = field(repr=False)


def run_measured(
    cmd: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None, interval: float = 0.25
) -> Measured:
    """Run ``cmd`` to completion, sampling the memory of its process tree every ``interval`` seconds.

    The wall time ends when the process exits, not at the next sample. Up to ``ee11f45`` this loop
    slept ``interval`` between polls, so every time was rounded up to a whole number of samples: with
    the 2-s interval of ``d51d3c8``, a 10-photo run measured 12.2-12.3 s in every repeat.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, text=True,
        start_new_session=True, cwd=cwd,
    )
    peak = 0
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    ps = psutil.Process(proc.pid)
    while True:
        try:
            peak = max(peak, _tree_pss(ps))
        except psutil.NoSuchProcess:
            pass
        try:
            proc.wait(timeout=interval)  # returns as soon as the process exits
            break
        except subprocess.TimeoutExpired:
            continue
    seconds = time.perf_counter() - start
    reader.join()
    # Ray may leave its raylet/GCS behind for a moment after the driver exits.
    try:
        os.killpg(proc.pid, 9)
    except ProcessLookupError:
        pass
    return Measured(seconds, peak, proc.returncode, "".join(chunks))


def random_weights(workdir: Path, model: str) -> str:
    """A random state dict for ``model`` (timing only), saved once under ``workdir``; its path."""
    path = Path(workdir) / f"{model}-random.pth"
    if not path.exists():
        import torch

        from batch_classify.models.registry import get_spec

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(get_spec(model).build().state_dict(), tmp)
        tmp.replace(path)
    return str(path)


#: Site-packages folders no CPU variant reads (CUDA libraries, the GPU compiler, browsers for the UI tests).
COLD_PACKAGES = frozenset({"nvidia", "triton", "playwright"})

#: Additions in :func:`python_loop_seconds`: 0.9-2.4 s on the 2-core development VM on 2026-12-01.
LOOP_ADDITIONS = 30_000_000


#: What :func:`import_seconds` imports in a fresh interpreter: Prefect's server code, which the temporary
#: API's process imports first (3.5-5.0 s in a fresh interpreter on the development VM, 2026-12-01 afternoon).
IMPORT_PROBE = "import uvicorn, prefect.server.api.server"


def import_seconds() -> float:
    """Seconds a fresh interpreter takes for :data:`IMPORT_PROBE`: the speed of the start-up work that
    dominates a short run (imports: unmarshalling, allocating, page faults), which on the development
    VM varied by 40% within an hour while :func:`python_loop_seconds` stayed within 0.9-1.4 s."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORT_PROBE], check=True, capture_output=True)
    return time.perf_counter() - start


def python_loop_seconds() -> float:
    """Seconds this machine takes now for :data:`LOOP_ADDITIONS` Python additions in one thread: the
    speed of a core on work that stays in its caches. On the 2-core development VM it went from 0.9 s
    to 2.4 s within a day, which moves every whole-process time with it; a benchmark records it (and
    :func:`import_seconds`) beside its figures."""
    start = time.perf_counter()
    total = 0
    for i in range(LOOP_ADDITIONS):
        total += i
    return time.perf_counter() - start


def warm_file_cache(*roots: Path) -> tuple[int, float]:
    """Read every file under ``roots`` (and this interpreter's site-packages, less :data:`COLD_PACKAGES`)
    once, so that each timed run starts with the same warm page cache: without it, the runs after
    ``seed-720`` (15 GiB resident, which evicts the page cache) paid for reading their Python packages
    and photos from disk again; on 2026-12-01 `ours` right after it took 35 s where it took 20 s warm.

    Returns:
        (bytes read, seconds).
    """
    import site

    start = time.perf_counter()
    total = 0
    buffer = bytearray(1 << 22)
    tops = [Path(p) for p in site.getsitepackages() if Path(p).is_dir()] or [Path(sys.prefix)]
    for root in [*tops, *roots]:
        for dirpath, dirnames, filenames in os.walk(root):
            if Path(dirpath) in tops:
                dirnames[:] = [d for d in dirnames if d not in COLD_PACKAGES]
            for name in filenames:
                try:
                    with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                        while n := f.readinto(buffer):
                            total += n
                except OSError:
                    pass
    return total, time.perf_counter() - start


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
