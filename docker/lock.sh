#!/usr/bin/env bash
# Regenerate docker/requirements.lock: every Python package of the worker image, pinned with hashes,
# for the image's platform (linux x86_64, glibc of Ubuntu 24.04) and its Python (PYTHON_VERSION in
# docker/Dockerfile), compiled from
#   pyproject.toml [project.dependencies]   the application's ranges
#   docker/requirements.in                  what only the image adds (ray[default], the build backend)
#   constraints.txt                         the exact versions tested together (torch, ray, prefect, ...)
#
#   bash docker/lock.sh            after changing any of those three files: every pin the inputs
#                                  still allow stays as it is in the current lock; hashes are
#                                  always taken afresh from the index
#   bash docker/lock.sh --upgrade  move every unconstrained package to its newest allowed version
#   bash docker/lock.sh --check    exit 1 (and show the diff) if the lock is not what this script
#                                  writes now, hashes included; changes nothing
#                                  (tests/integration/test_docker.py runs this)
#
# Needs uv $UV_VERSION (the one the Dockerfile copies in) and the package index (PyPI, or
# UV_INDEX_URL). uv is taken from .venv/bin, then PATH, if it is that version; otherwise it is
# installed with pip (--target) into ~/.cache/batch-classify/uv-$UV_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.0
PLATFORM=x86_64-manylinux_2_39   # Ubuntu 24.04 (the nvidia/cuda base) has glibc 2.39
LOCK=docker/requirements.lock

mode=write
case "${1:-}" in
  "") ;;
  --upgrade) mode=upgrade ;;
  --check) mode=check ;;
  *) echo "usage: bash docker/lock.sh [--upgrade|--check]" >&2; exit 2 ;;
esac

python_version=$(sed -n 's/^ARG PYTHON_VERSION=\([0-9.]*\)$/\1/p' docker/Dockerfile)
if [ -z "$python_version" ]; then
  echo "docker/lock.sh: no 'ARG PYTHON_VERSION=X.Y.Z' line in docker/Dockerfile" >&2
  exit 2
fi

uv_bin=""
for candidate in .venv/bin/uv "$(command -v uv || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ] && [ "$("$candidate" --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    uv_bin=$candidate
    break
  fi
done
if [ -z "$uv_bin" ]; then
  tools="${XDG_CACHE_HOME:-$HOME/.cache}/batch-classify/uv-$UV_VERSION"
  if [ ! -x "$tools/bin/uv" ]; then
    python=python3
    [ -x .venv/bin/python ] && python=.venv/bin/python
    "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$tools" "uv==$UV_VERSION"
  fi
  uv_bin="$tools/bin/uv"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The pins of the current lock, without their hashes, seed the output file: uv keeps a seeded pin
# wherever the inputs still allow it, and takes every hash afresh from the index (a seeded hash
# would be carried over unchecked).
if [ -f "$LOCK" ]; then
  grep -E '^[A-Za-z0-9][A-Za-z0-9._-]*==' "$LOCK" | sed 's/[[:space:]]*\\$//' > "$tmp/requirements.lock"
fi

compile_args=(--quiet --no-config
  pyproject.toml docker/requirements.in -c constraints.txt
  --python-version "$python_version" --python-platform "$PLATFORM"
  --only-binary :all: --generate-hashes
  --custom-compile-command "bash docker/lock.sh"
  --output-file "$tmp/requirements.lock")

case $mode in
  write) "$uv_bin" pip compile "${compile_args[@]}" && cp "$tmp/requirements.lock" "$LOCK" ;;
  upgrade) "$uv_bin" pip compile "${compile_args[@]}" --upgrade && cp "$tmp/requirements.lock" "$LOCK" ;;
  check)
    "$uv_bin" pip compile "${compile_args[@]}"
    if ! diff -u "$LOCK" "$tmp/requirements.lock"; then
      echo "docker/lock.sh --check: $LOCK is not what the inputs give now; run: bash docker/lock.sh" >&2
      exit 1
    fi
    ;;
esac
