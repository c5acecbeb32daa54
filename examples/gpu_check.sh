#!/usr/bin/env bash
# Checks glora's CUDA backend on a machine with an NVIDIA GPU, using a prebuilt
# release binary (no Rust toolchain needed there):
#   1. parity of every op, every GLoRA option (forward and backward) and a whole
#      supernet training step against the CPU backend, in f32 and with TF32;
#   2. the training step time of a ViT-B/16-sized model (random weights, batch 64,
#      GLoRA supernet on every qkv/proj/fc1/fc2) on our CUDA backend, and of the
#      PyTorch reference on the same GPU, side by side.
#
#   examples/gpu_check.sh [GLORA_BINARY] [TORCH_STEP_SCRIPT] [RESULTS_DIR]
#
# Defaults: target/release/glora, ../shared/bench/torch_glora_step.py, gpu-check/.
# Everything it prints also goes to RESULTS_DIR (gpu_check.log), with parity*.json,
# the step logs and summary.md (both step times and their ratio): eight files at most.
# Sized for about 8 minutes.
set -u -o pipefail

GLORA=${1:-target/release/glora}
TORCH_STEP=${2:-../shared/bench/torch_glora_step.py}
OUT=${3:-gpu-check}
BATCH=${BATCH:-64}
ITERS=${ITERS:-10}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
say() { echo "$@" | tee -a "$LOG"; }

# NVRTC and cuBLAS often live outside the loader's cache.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
# The model (340 MB) and compiled kernels stay out of the results folder.
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
export GLORA_KERNEL_CACHE="${GLORA_KERNEL_CACHE:-$SCRATCH/kernel-cache}"

say "== machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; ldd --version | head -1; } 2>&1 | tee -a "$LOG"
if [ ! -x "$GLORA" ]; then
    say "no glora binary at $GLORA"
    exit 2
fi

status=0
say "== parity, f32 (tolerance 1e-5)"
timeout 240 "$GLORA" bench parity --device cuda -o "$OUT/parity.json" 2>&1 | tee -a "$LOG" || status=1
say "== parity, TF32 (tolerance 1e-3)"
timeout 120 "$GLORA" bench parity --device cuda --tf32 -o "$OUT/parity_tf32.json" 2>&1 | tee -a "$LOG" || status=1

say "== training step, ViT-B/16 batch $BATCH"
MODEL="$SCRATCH/vit-b.onnx"
"$GLORA" model vit --preset vit-b --classes 0 -o "$MODEL" 2>&1 | tee -a "$LOG"
timeout 240 "$GLORA" bench train "$MODEL" --batch "$BATCH" --classes 100 --device cuda \
    --iters "$ITERS" --warmup 3 2>&1 | tee "$OUT/glora_step.log" | tee -a "$LOG" || status=1
timeout 120 "$GLORA" bench train "$MODEL" --batch "$BATCH" --classes 100 --device cuda --tf32 \
    --iters "$ITERS" --warmup 3 2>&1 | tee "$OUT/glora_step_tf32.log" | tee -a "$LOG" || status=1
if [ -f "$TORCH_STEP" ]; then
    timeout 180 python3 "$TORCH_STEP" --model vit-b --batch "$BATCH" --device cuda \
        --steps "$ITERS" 2>&1 | tee "$OUT/torch_step.log" | tee -a "$LOG" || status=1
else
    say "no PyTorch reference at $TORCH_STEP"
fi

# The last JSON line of each log holds the median seconds per step.
median() { grep -o '"step_s_median": *[0-9.e+-]*' "$1" 2>/dev/null | tail -1 | sed 's/.*: *//'; }
ours=$(median "$OUT/glora_step.log")
ours_tf32=$(median "$OUT/glora_step_tf32.log")
theirs=$(median "$OUT/torch_step.log")
{
    echo "# GPU check"
    echo
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | sed 's/^/GPU: /'
    echo
    echo "| check | result |"
    echo "|---|---|"
    for f in parity parity_tf32; do
        [ -f "$OUT/$f.json" ] && echo "| $f | $(grep -o '"failed": *[0-9]*' "$OUT/$f.json" | head -1) of $(grep -o '"cases": *[0-9]*' "$OUT/$f.json" | head -1) |"
    done
    echo "| glora step, f32 (s, median) | ${ours:-n/a} |"
    echo "| glora step, TF32 (s, median) | ${ours_tf32:-n/a} |"
    echo "| PyTorch step (s, median) | ${theirs:-n/a} |"
    if [ -n "$ours" ] && [ -n "$theirs" ]; then
        echo "| ratio glora f32 / PyTorch | $(python3 -c "print(f'{$ours/$theirs:.2f}')") |"
    fi
    if [ -n "$ours_tf32" ] && [ -n "$theirs" ]; then
        echo "| ratio glora TF32 / PyTorch | $(python3 -c "print(f'{$ours_tf32/$theirs:.2f}')") |"
    fi
} >"$OUT/summary.md"
cat "$OUT/summary.md" | tee -a "$LOG"
exit $status
