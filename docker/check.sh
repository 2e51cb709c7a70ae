#!/usr/bin/env bash
# Build the worker image (docker/Dockerfile) and check it by running it:
#
#   engine      a container engine that can build and run here: a running Docker daemon, else
#               rootful podman (probing the OCI runtime options this host needs)
#   base        the upstream bases (CUDA_BASE, UV_IMAGE of the Dockerfile, pulled by digest), or,
#               where they cannot be pulled, a Debian bookworm base made locally with debootstrap
#               (python3.11 from Debian) and a uv image holding uv 0.13.0 from PyPI; both cached
#   build       the image, from the repository root (docker/Dockerfile.dockerignore as context)
#   demo        `batch-classify demo` inside it, as uid 10001, network off: the whole flow on local
#               Ray with an ephemeral Prefect API on scikit-image's photographs
#   flow        the deployments nightly-docker and reprocess-docker of prefect.yaml, as Prefect's
#               Docker worker will run them: their pull steps (run_steps), then the entrypoint
#               (load_flow_from_entrypoint), from the image's WORKDIR; the flow must be batch-classify
#   worker      `prefect worker start --help`
#
# Each step prints one line when it starts and one when it passes; a failure ends the script with
# "FAILED at step <step>" and a non-zero status. Status 3: this machine cannot build or run the
# image at all (no usable engine, no base obtainable); the reason is printed.
#
# Usage (from anywhere; needs root for podman and debootstrap, or a user in the docker group):
#   bash docker/check.sh [--base auto|upstream|local] [--tag TAG] [--prefect-yaml FILE]
#     --base auto       (default) upstream if both upstream images can be pulled, else local
#     --base upstream   the Dockerfile's defaults, exactly what `docker build` builds
#     --base local      the Debian base made here (PYTHON_SOURCE=system: Debian's 3.11.2)
#     --tag TAG         the image built (default batch-classify:check)
#     --prefect-yaml F  the prefect.yaml whose *-docker deployments are checked (default: the repo's)
# Environment:
#   ENGINE=docker|podman|dockerd   pick the engine (default: docker if its daemon answers, else
#                          podman, else dockerd); dockerd: start a private Docker daemon (root; its
#                          own socket and /var/lib/batch-classify-dockerd), stopped at the end
#   DOCKER                 the docker CLI (default docker); it needs BuildKit: buildx, or a CLI < 23
#   DOCKERD_OPTS           extra dockerd options (vfs is tried by itself if dockerd will not start)
#   PODMAN_OPTS            extra global podman options, e.g. "--storage-driver vfs"
#   BUILD_OPTS             extra build options, e.g. "--isolation chroot" (podman), "--no-cache"
#   WHEELS=DIR[:DIR]       folders of wheel files the build may take locked files from (podman only,
#                          mounted read-only; each file is still hash-checked against the lock);
#                          default /opt/pypi-more/files where it exists (a local copy of PyPI's
#                          torch and nvidia-* CUDA wheels). WHEELS= (empty) turns it off.
#   SSL_CERT_FILE          a CA bundle handed to the build as the secret `ca-certificates`
#                          (networks that inspect TLS); unset: the images' own CAs
#   DEBIAN_MIRROR          for debootstrap (default http://deb.debian.org/debian)
#   SHM_SIZE               /dev/shm of the demo container (default 2g; Ray's object store)
#   XDG_CACHE_HOME         the local base's rootfs tarball is cached in
#                          ${XDG_CACHE_HOME:-~/.cache}/batch-classify/base/
set -euo pipefail
cd "$(dirname "$0")/.."

base_mode=auto
tag=batch-classify:check
prefect_yaml=prefect.yaml
while [ $# -gt 0 ]; do
  case $1 in
    --base) base_mode=${2:?--base needs auto, upstream or local}; shift 2 ;;
    --base=*) base_mode=${1#*=}; shift ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) tag=${1#*=}; shift ;;
    --prefect-yaml) prefect_yaml=${2:?--prefect-yaml needs a file}; shift 2 ;;
    --prefect-yaml=*) prefect_yaml=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker/check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $base_mode in auto|upstream|local) ;; *) echo "docker/check.sh: --base auto|upstream|local, not $base_mode" >&2; exit 2 ;; esac
[ -f "$prefect_yaml" ] || { echo "docker/check.sh: no $prefect_yaml" >&2; exit 2; }

UV_VERSION=0.13.0                      # = the uv of UV_IMAGE and of docker/lock.sh
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the local base needs beyond debootstrap's minbase: the interpreter the venv is made from
# (its standard library: libpython3.11-stdlib), and CAs for TLS to S3 / a remote Prefect API.
# The wheels of the lock carry every other native library (manylinux); Debian's glibc is 2.36.
BASE_PACKAGES=python3.11,ca-certificates
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/batch-classify
SHM_SIZE=${SHM_SIZE:-2g}
if [ -z "${WHEELS+set}" ] && [ -d /opt/pypi-more/files ]; then WHEELS=/opt/pypi-more/files; fi
WHEELS=${WHEELS:-}

dockerfile_arg() { sed -n "s/^ARG $1=//p" docker/Dockerfile | head -1; }
CUDA_BASE=$(dockerfile_arg CUDA_BASE)
UV_IMAGE=$(dockerfile_arg UV_IMAGE)
PYTHON_VERSION=$(dockerfile_arg PYTHON_VERSION)
if [ -z "$CUDA_BASE" ] || [ -z "$UV_IMAGE" ] || [ -z "$PYTHON_VERSION" ]; then
  echo "docker/check.sh: docker/Dockerfile lacks ARG CUDA_BASE=, UV_IMAGE= or PYTHON_VERSION=" >&2; exit 2
fi

# ---- reporting ----------------------------------------------------------------------------------
step=setup
step_started=$SECONDS
script_started=$SECONDS
begin() { step=$1; step_started=$SECONDS; echo "[check] $1: $2"; }
pass() { echo "[check] $step: ok ($((SECONDS - step_started)) s)${1:+ - $1}"; }
tmp=$(mktemp -d)
cannot() {  # this machine cannot do it at all: status 3, for the test to skip on
  echo "[check] CANNOT RUN at step $step: $*" >&2
  trap - EXIT
  on_exit 0
  exit 3
}
on_exit() {
  local rc=$1
  rm -rf "$tmp"
  if [ -n "${dockerd_pid:-}" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
  if [ "$rc" -ne 0 ]; then echo "[check] FAILED at step $step (exit $rc)" >&2; fi
}
trap 'on_exit $?' EXIT

# ---- engine -------------------------------------------------------------------------------------
begin engine "choosing a container engine (ENGINE=${ENGINE:-auto})"
DOCKER=${DOCKER:-docker}
engine=${ENGINE:-}
if [ -z "$engine" ]; then
  if command -v "$DOCKER" >/dev/null && "$DOCKER" info >/dev/null 2>&1; then
    engine=docker
  elif command -v podman >/dev/null; then
    engine=podman
  elif command -v dockerd >/dev/null && [ "$(id -u)" -eq 0 ]; then
    engine=dockerd
  else
    why="no docker daemon answers"
    command -v "$DOCKER" >/dev/null || why="no docker command"
    command -v buildah >/dev/null && why="$why; buildah is installed but cannot run containers without podman"
    cannot "$why, no podman and no dockerd to start (Debian: apt-get install podman runc; docker/README.md)"
  fi
fi
# shellcheck disable=SC2206
podman_opts=(${PODMAN_OPTS:-})
# shellcheck disable=SC2206
build_opts=(${BUILD_OPTS:-})
run_opts=()           # options every `run` needs on this host (probed below for podman)
dockerd_pid=""
if [ "$engine" = dockerd ]; then
  # A private dockerd (its own socket, data root and exec root), stopped when this script ends; its
  # images stay in /var/lib/batch-classify-dockerd for the next run.
  command -v dockerd >/dev/null || cannot "ENGINE=dockerd but no dockerd (Debian: apt-get install docker.io)"
  [ "$(id -u)" -eq 0 ] || cannot "starting dockerd needs root"
  run_dir=/run/batch-classify-dockerd
  mkdir -p "$run_dir" "$CACHE"
  # shellcheck disable=SC2206
  dockerd_opts=(${DOCKERD_OPTS:-})
  for attempt in default vfs; do
    [ "$attempt" = vfs ] && dockerd_opts+=(--storage-driver vfs)
    dockerd --host "unix://$run_dir/docker.sock" --data-root /var/lib/batch-classify-dockerd \
      --exec-root "$run_dir/exec" --pidfile "$run_dir/dockerd.pid" "${dockerd_opts[@]}" \
      >"$CACHE/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 60); do
      if "$DOCKER" -H "unix://$run_dir/docker.sock" info >/dev/null 2>&1 || ! kill -0 "$dockerd_pid" 2>/dev/null; then break; fi
      sleep 1
    done
    if "$DOCKER" -H "unix://$run_dir/docker.sock" info >/dev/null 2>&1; then break; fi
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    dockerd_pid=""
    echo "[check] engine: dockerd (${dockerd_opts[*]:-default options}) did not start: $(tail -1 "$CACHE/dockerd.log" | cut -c1-200)"
  done
  [ -n "$dockerd_pid" ] || cannot "dockerd does not start here (log: $CACHE/dockerd.log)"
  export DOCKER_HOST=unix://$run_dir/docker.sock
  echo "[check] engine: started dockerd ${dockerd_opts[*]} (pid $dockerd_pid, $DOCKER_HOST)"
  engine=docker
fi
case $engine in
  docker)
    command -v "$DOCKER" >/dev/null || cannot "ENGINE=docker but no $DOCKER command"
    out=$("$DOCKER" info 2>&1 >/dev/null) || cannot "the docker daemon does not answer: ${out:-docker info failed}"
    # The Dockerfile needs BuildKit (RUN --mount): the buildx plugin, or a CLI older than 23 with its own.
    if ! "$DOCKER" buildx version >/dev/null 2>&1; then
      client=$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null || echo 0)
      if [ "${client%%.*}" -ge 23 ] 2>/dev/null; then
        cannot "$(command -v "$DOCKER") $client has no buildx, so no BuildKit (install docker-buildx, or DOCKER= a CLI older than 23, e.g. Debian's /usr/bin/docker)"
      fi
    fi
    E=("$DOCKER")
    ;;
  podman)
    command -v podman >/dev/null || cannot "ENGINE=podman but no podman command"
    [ "$(id -u)" -eq 0 ] || cannot "podman is used rootful here (run as root); rootless podman is not tried"
    out=$(podman "${podman_opts[@]}" info 2>&1 >/dev/null) || cannot "podman info failed: $out"
    E=(podman "${podman_opts[@]}")
    ;;
  *) echo "docker/check.sh: ENGINE=docker, podman or dockerd, not $engine" >&2; exit 2 ;;
esac
pass "$engine"

image_exists() {
  case $engine in
    docker) docker image inspect "$1" >/dev/null 2>&1 ;;
    podman) "${E[@]}" image exists "$1" ;;
  esac
}
pull() { image_exists "$1" || timeout 900 "${E[@]}" pull "$1"; }
import_tar() {  # import_tar FILE TAG CHANGE...: a root file system tarball as an image
  local file=$1 name=$2; shift 2
  local changes=()
  for c in "$@"; do changes+=(--change "$c"); done
  "${E[@]}" import "${changes[@]}" "$file" "$name" >/dev/null
}

# ---- base ---------------------------------------------------------------------------------------
begin base "the base images (--base $base_mode)"
use_local=no
if [ "$base_mode" != local ]; then
  upstream_log=$tmp/pull.log
  if pull "$CUDA_BASE" >"$upstream_log" 2>&1 && pull "$UV_IMAGE" >>"$upstream_log" 2>&1; then
    base=$CUDA_BASE; uv_image=$UV_IMAGE
  elif [ "$base_mode" = upstream ]; then
    tail -5 "$upstream_log" >&2
    cannot "the upstream base images cannot be pulled ($CUDA_BASE, $UV_IMAGE); --base local makes one here"
  else
    echo "[check] base: upstream images cannot be pulled ($(tail -1 "$upstream_log" | cut -c1-200)); making a local base"
    use_local=yes
  fi
else
  use_local=yes
fi

if [ "$use_local" = yes ]; then
  # The key changes with anything that changes the file system: a new key makes a new base.
  key=$(printf '%s\n' "check.sh local base v1" "$DEBIAN_SUITE" "$DEBIAN_MIRROR" "$BASE_PACKAGES" | sha256sum | cut -c1-12)
  base=localhost/batch-classify-base:$DEBIAN_SUITE-$key
  tarball=$CACHE/base/$DEBIAN_SUITE-$key.tar
  if image_exists "$base"; then
    echo "[check] base: $base is there"
  else
    if [ ! -s "$tarball" ]; then
      command -v debootstrap >/dev/null || cannot "no debootstrap to make a local base (apt-get install debootstrap)"
      [ "$(id -u)" -eq 0 ] || cannot "debootstrap needs root"
      echo "[check] base: debootstrap $DEBIAN_SUITE (minbase + $BASE_PACKAGES) from $DEBIAN_MIRROR into $tarball"
      mkdir -p "$CACHE/base"
      rootfs=$CACHE/base/rootfs.$$
      rm -rf "$rootfs"
      if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$DEBIAN_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
          >"$tmp/debootstrap.log" 2>&1; then
        tail -20 "$tmp/debootstrap.log" >&2
        rm -rf "$rootfs"
        exit 1
      fi
      # Security and point-release updates, as a Debian image would have them; then no apt lists.
      cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $DEBIAN_SUITE main
deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main
deb http://deb.debian.org/debian-security $DEBIAN_SUITE-security main
EOF
      if ! chroot "$rootfs" /bin/sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get upgrade -y -q && apt-get clean' \
          >>"$tmp/debootstrap.log" 2>&1; then
        tail -20 "$tmp/debootstrap.log" >&2
        rm -rf "$rootfs"
        exit 1
      fi
      rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/tmp/* "$rootfs"/var/log/*.log
      tar --numeric-owner --xattrs -C "$rootfs" -cf "$tarball.part" .
      mv "$tarball.part" "$tarball"
      rm -rf "$rootfs"
    fi
    import_tar "$tarball" "$base" \
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV LANG=C.UTF-8' 'CMD ["/bin/bash"]'
    echo "[check] base: imported $tarball as $base"
  fi
  # uv: the same release as UV_IMAGE's, from PyPI (the image only provides /uv to COPY).
  uv_image=localhost/batch-classify-uv:$UV_VERSION
  if ! image_exists "$uv_image"; then
    uv_bin=""
    for candidate in .venv/bin/uv "$(command -v uv || true)"; do
      if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$("$candidate" --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
        uv_bin=$candidate; break
      fi
    done
    if [ -z "$uv_bin" ]; then
      tools=$CACHE/uv-$UV_VERSION
      if [ ! -x "$tools/bin/uv" ]; then
        python=python3; [ -x .venv/bin/python ] && python=.venv/bin/python
        "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
          --target "$tools" "uv==$UV_VERSION"
      fi
      uv_bin=$tools/bin/uv
    fi
    mkdir "$tmp/uv"
    cp "$uv_bin" "$tmp/uv/uv"
    tar --owner=0 --group=0 -C "$tmp/uv" -cf "$tmp/uv.tar" uv
    import_tar "$tmp/uv.tar" "$uv_image"
    echo "[check] base: imported uv $UV_VERSION ($uv_bin) as $uv_image"
  fi
fi
pass "$base, uv from $uv_image"

# ---- probe: can this engine run a container, and with which options? -----------------------------
begin probe "running a container of $base"
if [ "$engine" = podman ]; then
  hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
  [ "$hard_nofile" = unlimited ] && hard_nofile=1048576
  [ "$hard_nproc" = unlimited ] && hard_nproc=32768
  [ "$hard_nproc" -gt 32768 ] && hard_nproc=32768
  # podman raises RLIMIT_NOFILE/NPROC of rootful containers beyond what a host without
  # CAP_SYS_RESOURCE allows; crun refuses cgroups v1+v2 "hybrid" hosts, where runc works.
  limits=(--ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit "nproc=$hard_nproc:$hard_nproc")
  tried=""
  found=no
  for variant in default limits runc; do
    case $variant in
      default) g=(); r=() ;;
      limits) g=(); r=("${limits[@]}") ;;
      runc) command -v runc >/dev/null || { tried+=$'\n'"  --runtime runc: no runc installed (apt-get install runc)"; continue; }
            g=(--runtime runc); r=("${limits[@]}") ;;
    esac
    if out=$("${E[@]}" "${g[@]}" run --rm "${r[@]}" "$base" /bin/sh -c true 2>&1); then
      E+=("${g[@]}"); run_opts=("${r[@]}"); build_opts+=("${r[@]}"); found=yes; break
    fi
    tried+=$'\n'"  ${variant}: $(printf '%s' "$out" | tail -1)"
  done
  [ "$found" = yes ] || cannot "podman cannot run a container here:$tried"
else
  out=$("${E[@]}" run --rm "$base" /bin/sh -c true 2>&1) || cannot "docker cannot run a container here: $(printf '%s' "$out" | tail -1)"
fi
pass "${E[*]} run ${run_opts[*]}"

# ---- build --------------------------------------------------------------------------------------
begin build "building $tag from $base"
build_args=(--build-arg "CUDA_BASE=$base" --build-arg "UV_IMAGE=$uv_image")
[ "$use_local" = yes ] && build_args+=(--build-arg PYTHON_SOURCE=system)
if [ -n "${SSL_CERT_FILE:-}" ] && [ -s "$SSL_CERT_FILE" ]; then
  build_args+=(--secret "id=ca-certificates,src=$SSL_CERT_FILE")
fi
case $engine in
  docker)
    export DOCKER_BUILDKIT=1
    build_args+=(--progress=plain)
    [ -n "$WHEELS" ] && echo "[check] build: WHEELS ignored (docker build cannot mount folders); wheels come from PyPI"
    ;;
  podman)
    build_args+=(--ignorefile docker/Dockerfile.dockerignore)
    if [ -n "$WHEELS" ]; then
      links=""  # UV_FIND_LINKS: comma-separated
      IFS=: read -ra dirs <<<"$WHEELS"
      i=0
      for d in "${dirs[@]}"; do
        [ -d "$d" ] || { echo "docker/check.sh: WHEELS: no folder $d" >&2; exit 2; }
        build_args+=(--volume "$(cd "$d" && pwd):/wheels/$i:ro")
        links+="${links:+,}/wheels/$i"
        i=$((i + 1))
      done
      build_args+=(--build-arg "UV_FIND_LINKS=$links")
    fi
    ;;
esac
# The whole log goes to $CACHE/check-build.log; its step lines (podman: STEP n/m, docker: #n [stage
# n/m]) are shown as they come.
mkdir -p "$CACHE"
build_log=$CACHE/check-build.log
status=0
"${E[@]}" build -f docker/Dockerfile -t "$tag" "${build_args[@]}" "${build_opts[@]}" . 2>&1 | tee "$build_log" \
  | { grep --line-buffered -E '^(\[[0-9]+/[0-9]+\] )?STEP [0-9]|^#[0-9]+ \[|^COMMIT|^--> Using cache' || true; } \
  | sed -u 's/^/[check] build: /' | cut -c1-150 \
  || status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  tail -40 "$build_log" >&2
  echo "[check] build: the whole log: $build_log" >&2
  exit "$status"
fi
pass "$tag"

# No network (loopback only): the checks need none. Prefect's ephemeral server would try to send
# telemetry.
run() {
  "${E[@]}" run --rm --user 10001:10001 --network none -e PREFECT_SERVER_ANALYTICS_ENABLED=false \
    "${run_opts[@]}" "$@"
}

# ---- demo ---------------------------------------------------------------------------------------
begin demo "batch-classify demo in $tag (uid 10001, network none, shm $SHM_SIZE)"
if ! run --shm-size "$SHM_SIZE" "$tag" batch-classify demo >"$tmp/demo.log" 2>&1; then
  tail -40 "$tmp/demo.log" >&2
  exit 1
fi
pass "$(grep -E '^[0-9]+ predicted, [0-9]+ failed of' "$tmp/demo.log" | head -1 | cut -d';' -f1)"

# ---- flow ---------------------------------------------------------------------------------------
begin flow "pull steps + entrypoint of nightly-docker, reprocess-docker ($prefect_yaml) in $tag"
# What Prefect's flow-run container does (prefect.flows.load_flow_from_flow_run): run the
# deployment's pull steps, chdir to their `directory` output, import the module-path entrypoint.
# Which pull steps `prefect deploy` gives a deployment (prefect.cli.deploy): its own `pull`, else the
# project's; `[]` means none; none at all makes prefect deploy generate a set_working_directory step
# (for a deployment with an image job variable: /opt/prefect, which this image does not have).
read -r -d '' load_flow <<'PY' || true
import asyncio, os, sys
import yaml
from prefect.deployments.steps.core import run_steps
from prefect.flows import load_flow_from_entrypoint

config = yaml.safe_load(os.environ["CHECK_PREFECT_YAML"])
deployments = {d.get("name"): d for d in config.get("deployments") or []}
start = os.getcwd()
for name in sys.argv[1:]:
    d = deployments.get(name)
    if d is None:
        sys.exit(f"prefect.yaml has no deployment {name!r}")
    effective = d["pull"] if "pull" in d else config.get("pull")
    steps = [] if effective == [] else (d.get("pull") or config.get("pull"))
    if steps is None or steps == {}:
        sys.exit(f"{name}: no pull steps in prefect.yaml; `prefect deploy` would generate a "
                 "set_working_directory step to a folder this image does not have (/opt/prefect)")
    os.chdir(start)
    output = asyncio.run(run_steps(steps, print_function=lambda *a, **k: None))
    if output.get("directory"):
        os.chdir(output["directory"])
    flow = load_flow_from_entrypoint(d["entrypoint"], use_placeholder_flow=False)
    if flow.name != "batch-classify":
        sys.exit(f"{name}: {d['entrypoint']} is the flow {flow.name!r}, not 'batch-classify'")
    print(f"{name}: {len(steps)} pull step(s) -> cwd {os.getcwd()}; {d['entrypoint']} -> flow {flow.name!r}")
PY
if ! run -e CHECK_PREFECT_YAML="$(cat "$prefect_yaml")" -e PREFECT_LOGGING_LEVEL=WARNING "$tag" \
    python -c "$load_flow" nightly-docker reprocess-docker >"$tmp/flow.log" 2>&1; then
  tail -30 "$tmp/flow.log" >&2
  exit 1
fi
grep -E '^[a-z-]+-docker: ' "$tmp/flow.log" | sed 's/^/[check] flow: /'
pass

# ---- worker -------------------------------------------------------------------------------------
begin worker "prefect worker start --help in $tag"
if ! run "$tag" prefect worker start --help >"$tmp/worker.log" 2>&1; then
  tail -30 "$tmp/worker.log" >&2
  exit 1
fi
pass

step=finished
echo "[check] all checks passed: $tag (engine $engine, base $base) in $((SECONDS - script_started)) s"
