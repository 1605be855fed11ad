#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU, in at most 8 minutes, it
#   1. runs the neuron, kernel and model tests on CUDA (ILIF_TEST_DEVICE=cuda),
#   2. times the neurons (scripts/bench_neurons.py --device cuda: ILIF and LIF on Triton, spikingjelly's
#      LIFNode on its own CUDA kernels, our torch loop, the release-style loop) on [T, 128, 64, 32, 32],
#   3. times a PreAct ResNet-18 training step (scripts/bench_train.py --device cuda: LIF vs ILIF, eager vs
#      compiled, AMP off / bf16 / fp16),
#   4. trains one epoch of stand-in CIFAR-10 with AMP and torch.compile,
# and writes results/gpu/ (markdown naming the GPU, torch, triton and the commit). Without a GPU it
# stops at once with one line and exit code 2.
#
#   bash scripts/gpu_check.sh                 # uses .venv/bin/python if present, else python3
#   PY=python3.12 bash scripts/gpu_check.sh   # another interpreter that has the pinned packages
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
unset TRITON_INTERPRET

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to $PY (torch.cuda.is_available() is False); nothing was run" >&2
  exit 2
fi

out=results/gpu
mkdir -p "$out"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
header=$("$PY" -c "
import torch, triton, spikingjelly, importlib.metadata as md
print(f'GPU: {torch.cuda.get_device_name()}; torch {torch.__version__} (CUDA {torch.version.cuda}); '
      f'triton {triton.__version__}; spikingjelly {md.version(\"spikingjelly\")}; commit $commit')")
echo "$header"

section() {  # section FILE TITLE COMMAND...: run COMMAND, write its output under a header into FILE
  local file=$1 title=$2
  shift 2
  echo "== $title"
  {
    echo "# $title"
    echo
    echo "$header"
    echo
    echo "\`$*\`"
    echo
  } >"$file.tmp"
  local rc=0
  "$@" 2>&1 | tee -a "$file.tmp" || rc=$?
  mv "$file.tmp" "$file"
  return $rc
}

status=0
section "$out/tests.md" "Neuron, kernel and model tests on CUDA" \
  env ILIF_TEST_DEVICE=cuda timeout 150 "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_neurons.py tests/test_kernels.py tests/test_models.py || status=1
section "$out/neurons.md" "Neuron forward+backward on CUDA" \
  timeout 120 "$PY" scripts/bench_neurons.py --device cuda --T 4 8 --shape 128 64 32 32 --repeats 10 || status=1
section "$out/train_step.md" "PreAct ResNet-18 training step on CUDA" \
  timeout 150 "$PY" scripts/bench_train.py --device cuda --batch 128 --amp off bf16 fp16 --repeats 10 || status=1
section "$out/stand_in_training.md" "One epoch of stand-in CIFAR-10 with AMP and torch.compile" \
  timeout 90 "$PY" -m ilif.train experiment_name=gpu_check dataset=cifar10 dataset.stand_in=true \
  dataset.stand_in_size=32 dataset.stand_in_samples=4096 model=preact_resnet18 trainer.device=cuda \
  trainer.amp=fp16 trainer.compile=true trainer.epochs=1 \
  "runs_root=$(mktemp -d)" || status=1
echo "gpu_check: wrote $out/ (exit $status)"
exit $status
