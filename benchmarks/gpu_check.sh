#!/usr/bin/env bash
# GPU check: one command on a machine with an NVIDIA GPU, from the repository root (../shared/data beside it):
#
#   bash benchmarks/gpu_check.sh             a fresh venv with the GPU build (pip install -e '.[gpu,test]',
#                                            pip check), then benchmarks/gpu_check.py: the tiny profile and one
#                                            epoch of each quick real-data profile; prints images/s per stage, the precision
#                                            used and peak GPU memory (Markdown)
#   bash benchmarks/gpu_check.sh --dry-run   any machine, no GPU needed: resolves the GPU install in a fresh venv
#                                            without installing it (pip --dry-run --report, then checked: one
#                                            TensorFlow, every requirement met), then runs the tiny profile with
#                                            this checkout's .venv (make install) on the CPU
#
# PYTHON picks the interpreter (default python3.11); GPU_CHECK_DIR where the venv and copies go (default: a new
# temporary folder). The GPU venv is several GiB (TensorFlow and the NVIDIA libraries as wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
DIR="${GPU_CHECK_DIR:-$(mktemp -d /tmp/facelab-gpu-check-XXXXXX)}"
MODE=gpu
if [[ "${1:-}" == "--dry-run" ]]; then MODE=dry-run; elif [[ -n "${1:-}" ]]; then
  echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
started=$SECONDS
echo "== fresh venv in $DIR/venv ($($PYTHON --version))"
"$PYTHON" -m venv "$DIR/venv"
"$DIR/venv/bin/python" -m pip install -q --upgrade pip

if [[ $MODE == gpu ]]; then
  "$DIR/venv/bin/python" -m pip install -q -e '.[gpu,test]'
  "$DIR/venv/bin/python" -m pip check
  echo "== installed in $((SECONDS - started)) s:" \
    $("$DIR/venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(tensorflow|keras|nvidia-cudnn)' | tr -s ' ' '=')
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$DIR/venv/bin/python" benchmarks/gpu_check.py --require-gpu --work "$DIR/copies"
else
  "$DIR/venv/bin/python" -m pip install -q --dry-run --ignore-installed --report "$DIR/gpu-install.json" -e '.[gpu,test]'
  echo "== GPU install resolved in $((SECONDS - started)) s (not installed)"
  .venv/bin/python benchmarks/gpu_check.py --check-report "$DIR/gpu-install.json"
  echo "== the tiny profile on this machine (.venv, CPU)"
  PATH="$PWD/.venv/bin:$PATH" .venv/bin/python benchmarks/gpu_check.py --profiles tiny --timeout 1800 --work "$DIR/copies"
fi
echo "== gpu_check.sh done in $((SECONDS - started)) s"
