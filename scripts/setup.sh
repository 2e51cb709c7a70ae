#!/usr/bin/env bash
# Set up (or bring up to date) the project's virtual environment in .venv.
# Idempotent: a second run only checks that everything is installed.
# PYTHON picks the interpreter (3.10-3.12); torch/torchvision are pinned in constraints.txt
# to the pair that installs from this workplace's local wheel cache.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip's exit status decides (pipefail); only grep's "no line left" status (1) is let through, so a failing
# install stops this script with pip's message and a non-zero exit.
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || [ $? -eq 1 ]; }
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,demo]' 2>&1 | { grep -vE '^WARNING: Location|^\s*$' || [ $? -eq 1 ]; }
.venv/bin/python -c "import batch_classify, batch_classify.flows, prefect, ray, torch, torchvision; print(f'ready: prefect {prefect.__version__}, ray {ray.__version__}, torch {torch.__version__}')"
