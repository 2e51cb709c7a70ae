#!/usr/bin/env bash
# One-shot GPU benchmark on a lent machine with no internet (prepare it here with
# `python3 -m benchmarks.gpu_bundle`, which writes the ignored .whl/ and .devdata/ to carry).
#
#   bash benchmarks/gpu_check.sh            # from the project root; writes $OUT/gpu_check.log
#
# a. the model alone on CUDA (torch engine as shipped: bf16 autocast, channels_last; and fp32),
#    batch 128, for efficientnet_lite0 and resnet152; ONNX Runtime on the CPU for reference;
# b. the Ray Data inference stage with one GPU actor (torch on cuda) over GPU_CHECK_IMAGES
#    files (real photos replicated), after a warm-up run;
# c. per model, the ratio of the stage's steady images/s to the model alone's;
# d. decode parity (benchmarks/decode_parity.py): nvJPEG crops against Pillow's on the carried
#    photos, classified by EfficientNet-Lite0 with its real weights (.devdata/efficientnet_lite0-fp16.pth
#    when carried), and nvJPEG decode + resize + crop images/s;
# f. (issue 28 item 5, run first) benchmarks/gpu_reconcile.py per model: NVML busy in the steady state,
#    the model alone at the stage's batch size, the actors' time by part, a profiler trace, Ray Data's stats;
# e. GPU utilisation and memory sampled every 250 ms (nvidia-smi) during each stage run: mean
#    utilisation and peak memory per plan in the summary. A plan's 5th field picks the decoding:
#    torch-cuda:256:4:1:cpu (Pillow in CPU tasks) or :device (nvJPEG in the model actors).
# Random weights throughout (timing only). Each part runs under `timeout`, within a global
# budget (GPU_CHECK_BUDGET seconds), and does not depend on the others succeeding.
#
# GPU_CHECK_DRY=1: a CPU dry run with tiny counts (torch on the CPU stands in for CUDA), to
# prove syntax and imports on a machine without a GPU. PYTHON, GPU_CHECK_WHEELS,
# GPU_CHECK_SITE, GPU_CHECK_WORK override the interpreter and the paths.
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
PY=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-.whl}
SITE=${GPU_CHECK_SITE:-/tmp/site}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
PHOTOS=${GPU_CHECK_PHOTOS:-.devdata/photos}
BUDGET=${GPU_CHECK_BUDGET:-420}  # expected about 4 minutes on 16 cores + one H200
MODELS=${GPU_CHECK_MODELS:-efficientnet_lite0 resnet152}
DRY=${GPU_CHECK_DRY:-0}
if [ "$DRY" = 1 ]; then
    N_STAGE=${GPU_CHECK_IMAGES:-48}; N_ALONE=32; REPEATS=1; BATCH=16
    ALONE_RUNTIMES=torch; COMPILE_RUNTIMES=""; PLANS=${GPU_CHECK_PLANS:-torch:16:1:1:cpu torch:16:1:1:device}; N_ONNX=16
else
    N_STAGE=${GPU_CHECK_IMAGES:-12000}; N_ALONE=1024; REPEATS=5; BATCH=128
    ALONE_RUNTIMES=${GPU_CHECK_ALONE_RUNTIMES:-torch-cuda}
    COMPILE_RUNTIMES=${GPU_CHECK_COMPILE_RUNTIMES:-torch-cuda,torch-cuda-compile}  # "": skip; a failed compile loses only this part
    PLANS=${GPU_CHECK_PLANS:-torch-cuda:256:4:1:cpu torch-cuda:256:4:1:device}
    N_ONNX=${GPU_CHECK_ONNX_IMAGES:-0}  # 256: also the ONNX Runtime reference on the CPUs (needs the onnx wheels)
fi
LITE0_WEIGHTS=${GPU_CHECK_LITE0_WEIGHTS:-.devdata/efficientnet_lite0-fp16.pth}  # real weights, when carried
DEVICE=cuda; [ "$DRY" = 1 ] && DEVICE=cpu
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# run_part NAME MAX_SECONDS CMD...: CMD under timeout, min(MAX_SECONDS, what the budget leaves).
FAILED=""
run_part() {
    local name=$1 max=$2; shift 2
    local left=$((BUDGET - SECONDS - 20))
    local limit=$((max < left ? max : left))
    if [ "$limit" -lt 15 ]; then
        echo "=== $name: SKIPPED (budget spent, ${SECONDS}s elapsed)"; FAILED="$FAILED $name"; return 0
    fi
    echo "=== $name (limit ${limit}s, at ${SECONDS}s): $*"
    local t0=$SECONDS rc=0
    if declare -F "$1" >/dev/null; then set -- bash -c "$1"; fi  # a function of this script (exported below)
    timeout -k 10 "$limit" "$@" || rc=$?
    echo "=== $name: rc=$rc in $((SECONDS - t0))s"
    [ "$rc" = 0 ] || FAILED="$FAILED $name"
    return 0
}

stop_ray() {  # a timed-out stage may leave its raylet and workers (and the GPU) behind; not in a dry run,
    [ "$DRY" = 1 ] && return 0  # where other Ray instances on the machine are not ours to stop
    timeout 30 "$PY" -m ray.scripts.scripts stop --force >/dev/null 2>&1 || true
}

install_wheels() {
    shopt -s nullglob
    local whls=("$WHEELS"/*.whl)
    if [ ${#whls[@]} = 0 ]; then echo "no wheels under $WHEELS; using what is installed"; return 0; fi
    mkdir -p "$SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${whls[@]}" \
    || "$PY" - "$SITE" "${whls[@]}" <<'EOF'
import os, sys, zipfile  # pip missing or refusing: a wheel is a zip; keep the modes (ray's binaries)
target = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            path = z.extract(info, target)
            if info.external_attr >> 16 & 0o777:
                os.chmod(path, info.external_attr >> 16 & 0o777)
print("extracted", len(sys.argv) - 2, "wheels into", target)
EOF
}

info() {
    nvidia-smi -L || echo "(no nvidia-smi)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "cpus: $(nproc)"; free -g | head -2; df -h /dev/shm /tmp | tail -n +2
    "$PY" - <<'EOF'
import sys, platform
print("python", sys.version.split()[0], platform.machine())
import torch, torchvision
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
print("torchvision", torchvision.__version__)
import ray
print("ray", ray.__version__, ray.__file__)
import onnxruntime
print("onnxruntime", onnxruntime.__version__, onnxruntime.get_available_providers())
import efficientnet_lite_pytorch, jsonschema, numpy, pandas, pyarrow, PIL
print("numpy", numpy.__version__, "pandas", pandas.__version__, "pyarrow", pyarrow.__version__, "pillow", PIL.__version__)
EOF
}

prepare() {
    "$PY" - "$WORK" "$N_STAGE" "$N_ALONE" "$PHOTOS" $MODELS <<'EOF'
import sys
from pathlib import Path
from benchmarks.common import prepare_input, random_weights
work, n_stage, n_alone, photos, models = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:]
for n in {n_stage, n_alone}:
    print("input:", prepare_input(work, n, source=photos))
for m in models:
    print("random weights:", random_weights(work, m))
EOF
}

weights_for() {  # real weights for Lite0 when carried (the same timing, and predictions worth comparing)
    if [ "$1" = efficientnet_lite0 ] && [ -f "$LITE0_WEIGHTS" ]; then echo "$LITE0_WEIGHTS"; else echo "$WORK/$1-random.pth"; fi
}

sample_gpu() {  # every 250 ms: epoch seconds, GPU utilisation %, memory used MiB (until killed)
    command -v nvidia-smi >/dev/null || return 0
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 250 2>/dev/null \
        | while IFS=', ' read -r util mem; do echo "$(date +%s.%N),$util,$mem"; done > "$OUT/gpu_samples.csv"
}

summary() {
    "$PY" - "$WORK" "$OUT/gpu_check.json" "$OUT/gpu_samples.csv" $MODELS <<'EOF'
import json, statistics, sys
from pathlib import Path
work, dest, samples_csv, models = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:]
samples = []
try:
    for line in samples_csv.read_text().splitlines():
        t, util, mem = line.split(",")
        samples.append((float(t), float(util), float(mem)))
except (OSError, ValueError):
    pass
def gpu_window(run):
    inside = [(u, m) for t, u, m in samples if run["started_at"] <= t <= run["ended_at"]]
    if not inside:
        return None, None
    return round(statistics.mean(u for u, _ in inside), 1), max(m for _, m in inside)
def load(p):
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None
out = {}
print(f"{'model':<20}{'alone img/s':>12}{'fp32':>9}{'onnx cpu':>10}{'dec ms':>8}"
      f"{'stage s':>9}{'img/s':>9}{'1st s':>7}{'steady':>9}{'ratio':>7}")
for m in models:
    alone = load(work / f"alone-{m}.json") or {}
    onnx = load(work / f"onnx-{m}.json") or {}
    runs = load(work / f"stage-{m}.json") or []
    rate = alone.get("torch-cuda", alone.get("torch"))
    med = lambda k: statistics.median(r[k] for r in runs) if runs else None
    steady = med("steady_images_per_second")
    ratio = steady / rate if steady and rate else None
    out[m] = {"model_alone": alone, "onnx_cpu": onnx, "stage_runs": runs, "stage_steady_median": steady,
              "ratio_stage_steady_to_model_alone": ratio}
    f = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else format("-", ">" + spec.split(".")[0])
    print(f"{m:<20}{f(rate, '12.1f')}{f(alone.get('torch-cuda-fp32'), '9.1f')}{f(onnx.get('onnx'), '10.1f')}"
          f"{f(alone.get('decode_ms_per_image'), '8.2f')}{f(med('seconds'), '9.2f')}{f(med('images_per_second'), '9.1f')}"
          f"{f(med('first_batch_seconds'), '7.2f')}{f(steady, '9.1f')}{f(ratio, '7.3f')}")
print(f"\n{'model':<20}{'plan':<28}{'img/s':>9}{'steady':>9}{'1st s':>7}{'/alone':>8}{'GPU %':>7}{'peak MiB':>10}")
for m in models:
    alone = out[m]["model_alone"]
    rate = alone.get("torch-cuda", alone.get("torch"))
    for run in out[m]["stage_runs"]:
        util, peak = gpu_window(run)
        run["gpu_util_mean"], run["gpu_mem_peak_mib"] = util, peak
        ratio = run["steady_images_per_second"] / rate if rate else None
        run["ratio_steady_to_model_alone"] = ratio
        print(f"{m:<20}{run['plan']:<28}{run['images_per_second']:>9.1f}{run['steady_images_per_second']:>9.1f}"
              f"{run['first_batch_seconds']:>7.2f}{f(ratio, '8.3f')}{f(util, '7.1f')}{f(peak, '10.0f')}")
for m in models:
    compiled = load(work / f"compile-{m}.json")
    if compiled:
        out[m]["compile"] = compiled
        print("COMPILE", m, json.dumps(compiled))
parity = load(work / "parity.json")
if parity:
    out["decode_parity"] = parity
    print("\nPARITY", json.dumps(parity))
for m in models:
    r = out[m]["ratio_stage_steady_to_model_alone"]
    print(f"RATIO {m}: stage steady / model alone = {r:.3f}" if r else f"RATIO {m}: n/a (a part failed)")
dest.write_text(json.dumps(out, indent=1))
EOF
}

export PY WHEELS SITE WORK PHOTOS MODELS N_STAGE N_ALONE OUT LITE0_WEIGHTS DEVICE
export -f install_wheels info prepare

main() {
    echo "gpu_check $(date -u +%FT%TZ) dry=$DRY models=[$MODELS] stage images=$N_STAGE plans=[$PLANS] budget=${BUDGET}s"
    run_part install 120 install_wheels
    run_part info 60 info
    run_part imports 60 "$PY" -c "import batch_classify.stage.inference, batch_classify.stage.device_decode, benchmarks.stage; print('imports ok')"
    case "$FAILED" in *imports*) echo "=== the library does not import here; stopping (${SECONDS}s)"; return 1 ;; esac
    mkdir -p "$WORK"
    rm -f "$WORK"/alone-*.json "$WORK"/stage-*.json "$WORK"/onnx-*.json "$WORK"/parity.json "$WORK"/compile-*.json  # no stale figures
    run_part prepare 120 prepare
    local input_alone=$WORK/input-$N_ALONE input_stage=$WORK/input-$N_STAGE m sampler
    sample_gpu & sampler=$!
    # f. issue 28 item 5, first: the GPU busy share from NVML in the steady state, the model alone at the
    #    stage's batch size and dtype, each actor's time by part, one profiler trace, Ray Data's stats
    for m in $MODELS; do
        [ "${GPU_CHECK_RECONCILE:-1}" = 1 ] || continue
        run_part "reconcile-$m" 180 "$PY" -m benchmarks.gpu_reconcile "$input_stage" --model "$m" --weights "$(weights_for "$m")" \
            --device "$DEVICE" --batch-size "$([ "$DRY" = 1 ] && echo 16 || echo 256)" --actors "$([ "$DRY" = 1 ] && echo 1 || echo 4)" \
            --alone-images "$N_ALONE" --out "$OUT/reconcile"
        stop_ray
    done
    # d. decode parity and nvJPEG's speed
    run_part parity 120 bash -c 'set -o pipefail; "$0" -m benchmarks.decode_parity "$1" --device "$2" \
        $( [ -f "$3" ] && echo --weights "$3" ) --speed-input "$4" --speed-images "$5" | tee "$6.out" && tail -n 1 "$6.out" > "$6"' \
        "$PY" "$PHOTOS" "$DEVICE" "$LITE0_WEIGHTS" "$input_stage" "$([ "$DRY" = 1 ] && echo 64 || echo 4096)" "$WORK/parity.json"
    # b. the Ray Data stage (first, now: it is what this check is for), CPU decoding against device decoding
    for m in $MODELS; do
        # shellcheck disable=SC2086
        run_part "stage-$m" 200 "$PY" -m benchmarks.stage "$input_stage" $PLANS --model "$m" --repeats "${GPU_CHECK_STAGE_REPEATS:-1}" \
            --weights "$(weights_for "$m")" --json "$WORK/stage-$m.json"
        stop_ray
    done
    # a. the model alone on CUDA, batch 128, pre-decoded images
    for m in $MODELS; do
        run_part "alone-$m" 120 bash -c 'set -o pipefail; "$0" -m benchmarks.model_alone "$1" --model "$2" --batch-size "$3" \
            --images "$4" --repeats "$5" --runtimes "$6" --weights "$7" | tee "$8.out" && tail -n 1 "$8.out" > "$8"' \
            "$PY" "$input_alone" "$m" "$BATCH" "$N_ALONE" "$REPEATS" "$ALONE_RUNTIMES" "$(weights_for "$m")" "$WORK/alone-$m.json"
    done
    for m in $MODELS; do  # torch.compile (needs Triton and a C compiler on the machine), last: the least needed
        [ -z "$COMPILE_RUNTIMES" ] && continue
        run_part "compile-$m" 150 bash -c 'set -o pipefail; "$0" -m benchmarks.model_alone "$1" --model "$2" --batch-size "$3" \
            --images "$4" --repeats 3 --runtimes "$5" --weights "$6" | tee "$7.out" && tail -n 1 "$7.out" > "$7"' \
            "$PY" "$input_alone" "$m" "$BATCH" "$N_ALONE" "$COMPILE_RUNTIMES" "$(weights_for "$m")" "$WORK/compile-$m.json"
    done
    kill "$sampler" 2>/dev/null; pkill -f "nvidia-smi --query-gpu=utilization.gpu" 2>/dev/null || true
    # a'. reference: ONNX Runtime on the CPU, every core, the CPU pipeline's batch of 64
    for m in $MODELS; do
        [ "$N_ONNX" = 0 ] && continue
        run_part "onnx-$m" 90 bash -c 'set -o pipefail; "$0" -m benchmarks.model_alone "$1" --model "$2" --batch-size 64 \
            --images "$3" --repeats "$4" --runtimes onnx --weights "$5" | tee "$6.out" && tail -n 1 "$6.out" > "$6"' \
            "$PY" "$input_alone" "$m" "$N_ONNX" "$([ "$DRY" = 1 ] && echo 1 || echo 2)" "$WORK/$m-random.pth" "$WORK/onnx-$m.json"
    done
    # c. summary and ratios
    echo "=== summary (${SECONDS}s elapsed; failed:${FAILED:- none})"
    summary
    if [ -n "$FAILED" ] && [ -d /tmp/ray/session_latest/logs ]; then  # Ray's logs, for a failed stage
        tar czf "$OUT/ray-logs.tar.gz" -C /tmp/ray/session_latest logs 2>/dev/null || true
        [ "$(stat -c %s "$OUT/ray-logs.tar.gz" 2>/dev/null || echo 0)" -lt 15000000 ] || rm -f "$OUT/ray-logs.tar.gz"
    fi
    echo "done in ${SECONDS}s"
}

main 2>&1 | tee "$LOG"
