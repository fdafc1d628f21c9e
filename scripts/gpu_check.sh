#!/bin/bash
# Everything a GPU session should check, in one command (run from the repository root on a
# Hopper machine, with the project's dependencies importable):
#   bash scripts/gpu_check.sh [LOG_DIR]
# GPU tests (both kernel builds), compute-sanitizer memcheck and racecheck on 2-layer models
# (full logs in LOG_DIR: memcheck also lists driver API calls that returned errors), and the batch-1 decode comparison against torch.compile.
set -u
LOG_DIR=${1:-gpu-check-logs}
mkdir -p "$LOG_DIR"
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "=== GPU tests"
python3 -m pytest tests/gpu -m gpu -q 2>&1 | tee "$LOG_DIR/pytest.log" | tail -15
for tool in memcheck racecheck; do
    echo "=== compute-sanitizer $tool"
    compute-sanitizer --tool "$tool" python3 scripts/sanitize_step.py \
        > "$LOG_DIR/$tool.log" 2>&1
    tail -3 "$LOG_DIR/$tool.log"
done
# cuda-bindings looks up driver entry points at initialisation; the ones this driver lacks
# come back as cuGetProcAddress "invalid argument", which memcheck counts as errors.
echo "memcheck: $(grep -c 'Program hit .* cuGetProcAddress' "$LOG_DIR/memcheck.log") entry-point" \
     "lookups reported, $(grep -c 'Invalid \|out of bounds\|Program hit' "$LOG_DIR/memcheck.log")" \
     "reports in all"
echo "=== bench (batch 1, context 512)"
python3 -m eventkernel.serve.cli bench --models llama-3.2-1b,qwen3-8b --tokens 1 \
    --contexts 512 --baselines torch-compile,floor --warmup 5 --iters 30 \
    --out "$LOG_DIR/bench.json" 2>&1 | tail -14
