"""Side-by-side benchmark: the seed notebook, a DataLoader loop, `batch-classify run`, the model alone.

One command, one machine, the same images and model for every variant. Whole-process
variants run as subprocesses, alternating (seed, dataloader, ours, … then again) so that
drift in the machine hits them alike, each after an untimed pass that reads the packages, photos and
caches it uses into the page cache (``common.warm_file_cache``: ``seed-720`` evicts it); the table gives medians over ``--repeats`` and the
ratio of each to the seed run as a CPU user would (`seed-32`). Peak memory is the peak proportional set size (PSS) of each
process tree, Ray's raylet, workers and object store included, sampled every ``--sample-interval`` seconds (2).

Usage (from the project root, beside ../shared)::

    .venv/bin/python -m benchmarks.compare --images 1000 --repeats 3 --scale 10000
    .venv/bin/python -m benchmarks.compare --model resnet152 --random-weights --images 200 --repeats 1 \\
        --variants seed-32,ours,model

Writes the table to stdout and, with ``--out FILE.md``, to FILE.md and FILE.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from benchmarks.common import (
    IMPORT_PROBE,
    LOOP_ADDITIONS,
    Measured,
    import_seconds,
    median,
    prepare_input,
    python_loop_seconds,
    random_weights,
    run_measured,
    warm_file_cache,
)
from batch_classify.stage.plan import CPU_BATCH_SIZE
from batch_classify.settings import default_cache_dir

PY = sys.executable
ROOT = Path(__file__).resolve().parents[1]


#: The seed pipeline's two rows: ``seed-32`` as a CPU user runs it (batches of 32, one CPU actor), the
#: reference of the "× seed" column; ``seed-720`` as the tutorial writes it (a GPU setting that only
#: slows it on a CPU).
SEED_BATCH = {"seed-32": 32, "seed-720": 720}
#: The options each ``ours-*`` variant adds to ``batch-classify run`` (``ours``: none, the defaults;
#: ``ours-server``: none, but a Prefect server is running, :func:`_server`).
VARIANT_OPTIONS = {
    "ours-torch": ["--runtime", "torch"],
    "ours-int8": ["--precision", "int8"],
    "ours-ray": ["--executor", "ray"],
    "ours-local": ["--executor", "local"],
}
#: Files of the ``ours-10`` variant: the whole process on a run this small is its fixed overhead.
OVERHEAD_FILES = 10


def _random_weights(workdir: Path, model: str) -> str:
    """A random state dict for ``model`` (timing only), saved once under ``workdir``."""
    return random_weights(workdir, model)


def _command(variant: str, args, input_dir: Path, out: Path, weights: str | None, run_id: str) -> tuple[list[str], dict]:
    # One Prefect home for every run, kept between runs, as on a user's machine: its SQLite database
    # exists after the first run (creating it, which every run paid when each had a fresh home, is
    # left to the untimed warm-up run in main()).
    env = {"PREFECT_HOME": str(Path(args.workdir) / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    w = ["--weights", weights] if weights else []
    if variant in SEED_BATCH:
        extra = ["--random-weights"] if weights else []
        return [PY, "-m", "benchmarks.seed_pipeline", str(input_dir), str(out / "seed"), "--model", args.model,
                "--batch-size", str(SEED_BATCH[variant]), "--concurrency", "1", *extra], env
    if variant == "daft":  # the peer (benchmarks/daft_variant.py): Daft's native runner, the same ONNX export
        return [PY, "-m", "benchmarks.daft_variant", str(input_dir), str(out / "daft"), "--model", args.model], env
    if variant == "dataloader":
        return [PY, "-m", "benchmarks.dataloader_loop", str(input_dir), str(out / "loop.parquet"), "--model", args.model, *w], env
    if variant.startswith("ours"):
        cmd = [PY, "-m", "batch_classify", "run", "-i", str(input_dir), "-o", str(out / "ours"), "--model", args.model,
               "--run-id", run_id, "-q", *w]
        cmd += VARIANT_OPTIONS.get(variant, [])
        if variant == "ours-server":  # a Prefect server that outlives the run, as a nightly deployment has
            env["PREFECT_API_URL"] = args.server_url
        if variant == "ours-before":  # run from that tree so that its packages come first on sys.path
            env["PYTHONPATH"] = str(Path(args.before_tree).resolve())
        return cmd, env
    raise ValueError(f"unknown variant {variant!r}")


def _server(workdir: Path):
    """A Prefect API for the ``ours-server`` variant, started once, ready, and stopped at exit: what a
    nightly deployment reports to (the product's :class:`batch_classify.cli.startup.TemporaryApi`, kept)."""
    import atexit

    from batch_classify.cli.startup import TemporaryApi

    os.environ["PREFECT_HOME"] = str(workdir / "prefect-home")  # the same database as the other variants'
    server = TemporaryApi().start()
    server.wait_ready()
    atexit.register(server.stop)
    return server


def _warm_int8(args, source: Path, workdir: Path, weights: str | None) -> None:
    """One untimed ``ours-int8`` run over ``source``: the int8 model calibrated on it is cached for the timed runs."""
    m, _ = _timed("ours-int8", args, source, workdir / "out" / "warm-up-int8", weights, "warm-up-int8")
    print(f"int8 warm-up over {source.name} (untimed: quantizes and caches): {m.seconds:.1f} s", flush=True)


def _timed(variant: str, args, source: Path, out: Path, weights: str | None, run_id: str) -> tuple[Measured, dict]:
    """One timed whole-process run of ``variant`` over ``source`` into a fresh ``out``.

    Returns:
        the measurement, and what the run reported: ``ours*`` its report.json, ``daft`` its JSON line, others {}.

    Raises:
        RuntimeError: the run failed; the message names the variant and ends with its output.
    """
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd, env = _command(variant, args, source, out, weights, run_id)
    m = run_measured(cmd, env=env, cwd=env.get("PYTHONPATH"), interval=args.sample_interval)
    if m.returncode:
        raise RuntimeError(f"{variant} failed ({m.returncode}):\n{m.output[-4000:]}")
    report = _ours_report(out, run_id) if variant.startswith("ours") else _last_json(m.output) if variant == "daft" else {}
    return m, report


def _last_json(output: str) -> dict:
    """The JSON object a variant prints on its last line (``daft``: images, seconds, top1), or {}."""
    try:
        return json.loads(output.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {}


def _ours_report(out: Path, run_id: str) -> dict:
    try:
        return json.loads((out / "ours" / run_id / "report.json").read_text())
    except (OSError, ValueError):
        return {}


def _model_alone(args, input_dir: Path, weights: str | None) -> dict:
    cmd = [PY, "-m", "benchmarks.model_alone", str(input_dir), "--model", args.model, "--batch-size", str(args.batch_size),
           "--images", str(args.model_images)]
    if weights:
        cmd += ["--weights", weights]
    m = run_measured(cmd)
    if m.returncode:
        raise RuntimeError(f"model_alone failed:\n{m.output[-3000:]}")
    return json.loads(m.output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="files in the input (photos repeated under copy-K/)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--random-weights", action="store_true", help="random weights (timing only; resnet152 has none here)")
    parser.add_argument("--variants", default="seed-32,seed-720,dataloader,ours,ours-10,model",
                        help="of seed-32, seed-720, dataloader, daft (the peer: benchmarks/daft_variant.py, needs "
                             "`pip install daft`), ours, ours-10 (ours on 10 files: the fixed overhead), ours-torch, "
                             "ours-int8, ours-ray, ours-local, ours-server (ours with a Prefect server running), model")
    parser.add_argument("--scale-variants", default="ours,daft",
                        help="the variants run on --scale files, in turn (of the whole-process variants above)")
    parser.add_argument("--before-tree", help="a checkout of an earlier commit: adds variant ours-before")
    parser.add_argument("--batch-size", type=int, default=CPU_BATCH_SIZE, help="model-alone batch size (the pipeline's CPU default)")
    parser.add_argument("--model-images", type=int, default=256, help="pre-decoded images the model-alone run times")
    parser.add_argument("--scale", type=int, default=0, help="also run ours on this many files (steady state, memory vs size)")
    parser.add_argument("--scale-repeats", type=int, default=1,
                        help="scale runs, each followed by a model-alone run (the ceiling measured beside it)")
    parser.add_argument("--sample-interval", type=float, default=2.0,
                        help="seconds between memory samples of a run's process tree (each costs 50-60 ms of CPU "
                             "with Ray's 14 processes: every 0.25 s, 9%% of the 2 cores, which cut the 10,000-file "
                             "steady state from about 130 to 96-102 images/s)")
    parser.add_argument("--workdir", default="/tmp/batch-classify-bench")
    parser.add_argument("--out", help="write FILE.md and FILE.json")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    input_dir = prepare_input(workdir, args.images)
    small_dir = prepare_input(workdir, OVERHEAD_FILES)
    weights = _random_weights(workdir, args.model) if args.random_weights else None
    variants = [v for v in args.variants.split(",") if v]
    if args.before_tree:
        variants.insert(variants.index("ours") + 1 if "ours" in variants else len(variants), "ours-before")
    whole = [v for v in variants if v != "model"]
    results: dict[str, list[Measured]] = {v: [] for v in whole}
    reports: dict[str, list[dict]] = {v: [] for v in whole}
    model_alone: list[dict] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    loops = [python_loop_seconds()]
    imports = [import_seconds()]
    print(f"core speed: {LOOP_ADDITIONS:,} Python additions in {loops[0]:.2f} s; "
          f"a fresh `{IMPORT_PROBE}` in {imports[0]:.2f} s", flush=True)
    scale_variants = [v for v in args.scale_variants.split(",") if v] if args.scale else []
    server = _server(workdir) if "ours-server" in variants + scale_variants else None
    args.server_url = server.api_url if server else None
    if any(v.startswith("ours") for v in whole):  # untimed: creates Prefect's database and the ONNX export cache
        out = workdir / "out" / "warm-up"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        cmd, env = _command("ours", args, small_dir, out, weights, "warm-up")
        m = run_measured(cmd, env=env)
        print(f"warm-up (untimed): {m.seconds:.1f} s", flush=True)
    if "ours-int8" in whole:  # untimed: the int8 model calibrated on this input, cached as a nightly run's after its first
        _warm_int8(args, input_dir, workdir, weights)
    warm_roots = [input_dir, small_dir, workdir / "prefect-home", Path(default_cache_dir())]
    if args.before_tree:
        warm_roots.append(Path(args.before_tree))

    def warm() -> None:
        n, seconds = warm_file_cache(*warm_roots)
        print(f"  (page cache warmed: {n / 2**30:.1f} GiB read in {seconds:.1f} s, untimed)", flush=True)

    for rep in range(args.repeats):
        for variant in variants:
            warm()
            if variant == "model":
                model_alone.append(_model_alone(args, input_dir, weights))
                print(f"[{rep}] model alone: {model_alone[-1]}", flush=True)
                continue
            source = small_dir if variant == "ours-10" else input_dir
            m, report = _timed(variant, args, source, workdir / "out" / variant, weights, f"bench-{rep}")
            results[variant].append(m)
            reports[variant].append(report)
            print(f"[{rep}] {variant}: {m.seconds:.1f} s, peak {m.peak_bytes / 2**30:.2f} GiB", flush=True)

    scale = None
    if args.scale:
        big = prepare_input(workdir, args.scale)
        scale = {"images": args.scale}
        warm_roots.append(big)
        if "ours-int8" in scale_variants:
            _warm_int8(args, big, workdir, weights)
        for rep in range(args.scale_repeats):
            for variant in scale_variants:  # in turn, as the runs above
                warm()
                m, report = _timed(variant, args, big, workdir / "out" / "scale", weights, "bench-scale")
                scale.setdefault("variants", {}).setdefault(variant, []).append(
                    {"seconds": m.seconds, "peak_bytes": m.peak_bytes, "report": report})
                print(f"[{rep}] {variant} scale {args.scale}: {m.seconds:.1f} s, peak {m.peak_bytes / 2**30:.2f} GiB", flush=True)
            if "model" in variants:  # the ceiling, measured beside the run it bounds
                warm()
                model_alone.append(_model_alone(args, input_dir, weights))
                print(f"[{rep}] model alone after scale: {model_alone[-1]}", flush=True)

    loops.append(python_loop_seconds())
    imports.append(import_seconds())
    table = _render(args, started, input_dir, results, reports, model_alone, scale, loops, imports)
    print(table)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(table)
        raw = {
            "args": vars(args),
            "started": started,
            "runs": {v: [{"seconds": m.seconds, "peak_bytes": m.peak_bytes} for m in ms] for v, ms in results.items()},
            "reports": reports,
            "model_alone": model_alone,
            "python_loop_seconds": loops,
            "import_seconds": imports,
            "scale": scale,
        }
        Path(args.out).with_suffix(".json").write_text(json.dumps(raw, indent=2, default=str))


def _render(args, started, input_dir, results, reports, model_alone, scale, loops, imports) -> str:
    n = args.images
    seed_s = median([m.seconds for m in results.get("seed-32", [])])
    lines = [
        f"Run {started} on {os.cpu_count()} cores: {n} files ({input_dir}), model {args.model}"
        f"{' (random weights)' if args.random_weights else ''}, {args.repeats} alternating repeat(s), medians.",
        f"Core speed: {LOOP_ADDITIONS:,} Python additions took {loops[0]:.2f} s before the runs and {loops[-1]:.2f} s "
        "after them; a fresh interpreter's "
        f"`{IMPORT_PROBE}` (the temporary API's first work) took {imports[0]:.2f} s and {imports[-1]:.2f} s.",
        "",
        "| variant | files | wall s (whole process) | images/s | × seed-32 | peak memory GiB | top-1 | stage images/s (steady) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, ms in results.items():
        files = OVERHEAD_FILES if variant == "ours-10" else n
        s = median([m.seconds for m in ms])
        peak = max(m.peak_bytes for m in ms) / 2**30
        reps = [r for r in reports[variant] if r]
        top1 = f"{reps[0]['top1']:.3f}" if reps and reps[0].get("top1") is not None else "–"
        steady = median([r["stage_steady_images_per_second"] for r in reps if r.get("stage_steady_images_per_second")])
        stage = "–" if steady != steady else f"{steady:.0f}"
        ratio = f"{seed_s / s:.2f}" if files == n else "–"
        lines.append(
            f"| {variant} | {files} | {s:.1f} | {files / s:.1f} | {ratio} | {peak:.2f} | {top1} | {stage} |"
        )
    if "daft" in results:
        daft_s = median([m.seconds for m in results["daft"]])
        for variant in (v for v in results if v.startswith("ours") and v != "ours-10"):
            ours_s = median([m.seconds for m in results[variant]])
            lines += ["", f"`{variant}` against `daft`, the peer: {daft_s / ours_s:.2f}× (median wall times {ours_s:.1f} and "
                          f"{daft_s:.1f} s; above 1, ours is faster)."]
    if "ours-10" in results:
        times = ", ".join(f"{m.seconds:.1f}" for m in results["ours-10"])
        lines += ["", f"`ours-10`, the whole process on {OVERHEAD_FILES} files (its fixed overhead), each repeat: {times} s."]
    if model_alone:
        lines += ["", "Model alone on pre-decoded uint8 tensors, batch "
                  f"{model_alone[0]['batch_size']}, {model_alone[0]['threads']} threads (images/s, median):"]
        for runtime in ("onnx", "torch"):
            if runtime in model_alone[0]:
                rate = median([m[runtime] for m in model_alone])
                variant = "ours" if runtime == "onnx" else "ours-torch"
                steady = median([r["stage_steady_images_per_second"] for r in reports.get(variant, []) if r.get("stage_steady_images_per_second")])
                ratio = "" if steady != steady else f"; `{variant}` stage steady state {steady:.0f} = {steady / rate:.2f} of it"
                lines.append(f"- {runtime}: {rate:.1f}{ratio}")
    if scale:
        by_variant = scale.get("variants", {})
        lines += ["", f"Scale: {scale['images']} files, the variants in turn, whole process:", "",
                  "| variant | wall s (median) | each run | peak memory GiB | top-1 | stage images/s (steady) | × daft |",
                  "|---|---|---|---|---|---|---|"]
        daft_s = median([r["seconds"] for r in by_variant.get("daft", [])])
        for variant, runs in by_variant.items():
            s = median([r["seconds"] for r in runs])
            top1 = runs[0]["report"].get("top1")
            steady = runs[0]["report"].get("stage_steady_images_per_second")
            each = ", ".join(f"{r['seconds']:.1f}" for r in runs)
            lines.append(f"| {variant} | {s:.1f} | {each} | "
                         f"{max(r['peak_bytes'] for r in runs) / 2**30:.2f} | {'–' if top1 is None else f'{top1:.3f}'} | "
                         f"{steady or '–'} | {'–' if daft_s != daft_s or variant == 'daft' else f'{daft_s / s:.2f}'} |")
        steadies = [r["report"].get("stage_steady_images_per_second") for r in by_variant.get("ours", [])]
        steadies = [x for x in steadies if x]
        ceiling = _ceiling(model_alone)
        steady = median(steadies) if steadies else None
        if ceiling and steady:
            lines.append(f"Decode + model ceiling (the model alone's rate, median of all {len(model_alone)} model-alone "
                         f"runs, with each image's decoding added to its core time): {ceiling:.0f} images/s; the stage's "
                         f"steady state (median) is {steady:.1f} = {steady / ceiling:.2f} of it.")
    return "\n".join(lines) + "\n"


def _ceiling(model_alone: list[dict]) -> float | None:
    """The most the pipeline can classify per second on these cores with ONNX Runtime: each image costs
    the model's core time (``threads`` / model-alone rate) plus its decoding (``decode_ms_per_image``,
    one core), all cores busy: ``rate × model / (model + decode)``. None without a model-alone run."""
    if not model_alone or "onnx" not in model_alone[0]:
        return None
    rate = median([m["onnx"] for m in model_alone])
    decode_ms = median([m["decode_ms_per_image"] for m in model_alone])
    model_ms = 1000 * model_alone[0]["threads"] / rate
    return rate * model_ms / (model_ms + decode_ms)


if __name__ == "__main__":
    main()
