#!/usr/bin/env bash
# The GPU check: one short run (its parts' limits add up to 7 minutes) on a machine with a CUDA GPU and no network. Each part
# appends its rows to results/gpu/<part>.md as it measures them, so a part cut short by its time limit
# keeps what it measured. In order:
#   header.md          GPU, driver, torch, triton, spikingjelly, commit
#   kernels.md         Triton vs the torch loop (CUDA) and the C kernel (CPU copies), fp32/bf16/fp16,
#                      non-contiguous inputs, launches under torch.cuda.set_sync_debug_mode("error")
#   tests.md           tests/test_kernels.py and tests/test_neurons.py on CUDA
#   neurons.md         bench_neurons: spikingjelly LIFNode with Sigmoid on both sides (its Triton kernel),
#                      fp32 and bf16, N = 64, C·H·W = 65,536, T = 4/16/32
#   train_step.md      bench_train: eager LIF/ILIF × off/bf16/fp16, one compiled ILIF bf16 row
#   stand_in_training.md  one stand-in CIFAR-10 epoch with fp16 and compile, then a resume to epoch 2
#   big.md             last, in its own process: a layer with T·N > 2³¹ elements
# Without a usable GPU it stops at once with one line naming what is missing, and exit code 2.
#
#   bash scripts/gpu_check.sh                 # uses .venv/bin/python if present, else python3
#   PY=/opt/env/bin/python bash scripts/gpu_check.sh   # an interpreter that has the pinned CUDA packages
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 WANDB_MODE=disabled
unset TRITON_INTERPRET

# What is missing, in one line (the CUDA wheel of the pinned torch cannot be downloaded on a GPU machine
# without network: it must be in this interpreter's environment already).
missing=$("$PY" - 2>&1 <<'EOF'
import importlib.util, sys
need = [m for m in ("torch", "triton", "spikingjelly", "hydra", "omegaconf", "pytest") if importlib.util.find_spec(m) is None]
if need:
    sys.exit(f"{sys.executable} lacks {', '.join(need)}: install the pinned packages (constraints.txt) into it first")
import torch
if torch.version.cuda is None:
    sys.exit(f"torch {torch.__version__} at {sys.executable} is a CPU-only build: it needs the CUDA wheel of torch==2.14.1")
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
EOF
) || { echo "gpu_check: ${missing:+${missing##*$'\n'}}${missing:-$PY does not run}" >&2; exit 2; }

out=results/gpu
mkdir -p "$out"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
header=$("$PY" -c "
import torch, triton, importlib.metadata as md, subprocess
driver = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True,
                        text=True).stdout.strip() or 'unknown'
print(f'GPU: {torch.cuda.get_device_name()}; driver {driver}; torch {torch.__version__} (CUDA {torch.version.cuda}); '
      f'triton {triton.__version__}; spikingjelly {md.version(\"spikingjelly\")}; commit $commit')")
echo "$header" | tee "$out/header.md"

status=0
part() {  # part FILE SECONDS TITLE COMMAND...: COMMAND's output appended to FILE under a header, as it comes
  local file=$out/$1 limit=$2 title=$3
  shift 3
  echo "== $title (at most ${limit} s)"
  printf '# %s\n\n%s\n\n`%s`\n\n' "$title" "$header" "$*" >"$file"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$file"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 124 ] && echo "(stopped at the ${limit} s limit; the rows above were measured)" | tee -a "$file"
  [ "$rc" = 0 ] || status=1
}

runs=$(mktemp -d)
part kernels.md 40 "Triton kernels on CUDA vs the torch loop and the C kernel" \
  "$PY" scripts/kernel_smoke.py --device cuda
part tests.md 80 "Kernel and neuron tests on CUDA" \
  env ILIF_TEST_DEVICE=cuda "$PY" -m pytest -q -p no:cacheprovider -x tests/test_kernels.py tests/test_neurons.py
part neurons.md 85 "Neuron forward+backward on CUDA (spikingjelly's shapes, Sigmoid on both sides)" \
  "$PY" scripts/bench_neurons.py --device cuda --T 4 16 32 --shape 64 65536 --dtype fp32 bf16 --repeats 10 --no-memory
part train_step.md 100 "PreAct ResNet-18 training step on CUDA" \
  "$PY" scripts/bench_train.py --device cuda --batch 128 --amp off bf16 fp16 --compiled ILIF:bf16 --repeats 10 --no-release
stand_in=(experiment_name=gpu_check dataset=cifar10 dataset.stand_in=true dataset.stand_in_size=32
          dataset.stand_in_samples=4096 model=preact_resnet18 trainer.device=cuda trainer.amp=fp16 trainer.compile=true
          trainer.progress=false trainer.epochs=2 "runs_root=$runs")
part stand_in_training.md 75 "Stand-in CIFAR-10 with fp16 and compile: preempted after epoch 1 (exit 75), resumed to epoch 2" \
  bash -c "'$PY' scripts/preempt_after_epoch.py ${stand_in[*]}; [ \$? = 75 ] && '$PY' -m ilif.train ${stand_in[*]}"
part big.md 40 "A layer with T·N > 2³¹ elements (64-bit offsets)" \
  "$PY" scripts/kernel_smoke.py --device cuda --big
rm -rf "$runs"
echo "gpu_check: wrote $out/ (exit $status)"
exit $status
