#!/usr/bin/env bash
# One prepared GPU session: environment, CUDA tests, `ssat bench` on the GPU, and the digits demo config in bf16
# vs fp32 (does bf16 cost accuracy?). Output goes to $OUT (or ./gpu-out). Run from the repository root:
#   bash benchmarks/gpu_check.sh
# It uses the machine's own torch; a wheel directory .whl/ (if present) supplies pinned pure-Python packages.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
PY=python3
section() { echo; echo "=== $1 ($(date +%T))"; }
{
section env
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"

section "pytest: CUDA tests + fast path"
timeout 240 $PY -m pytest -q -p no:cacheprovider -p no:logging tests/test_cuda.py tests/test_fastpath.py \
  tests/test_batch_augment.py tests/test_bench.py 2>&1 | tail -15

section "bench bf16, batch 128 and 1024"
for b in 128 1024; do
  timeout 120 $PY -m ssat bench --device cuda --precision bf16 --batch-size $b --compare --data --steps 30 --warmup 5
done | tee "$OUT/bench_cuda.jsonl"
section "bench fp32, batch 1024"
timeout 120 $PY -m ssat bench --device cuda --precision fp32 --batch-size 1024 --compare --steps 30 --warmup 5 \
  | tee -a "$OUT/bench_cuda.jsonl"
section "bench bf16 + compile, batch 1024"
timeout 300 $PY -m ssat bench --device cuda --precision bf16 --batch-size 1024 --compare --compile --steps 30 \
  --warmup 5 2>/dev/null | tee -a "$OUT/bench_cuda.jsonl"

section "digits demo config, bf16 vs fp32, scratch and ssat"
for p in bf16 fp32; do for m in scratch ssat; do
  timeout 120 $PY -m ssat train --config configs/demo.yaml --method $m --precision $p --device cuda --quiet \
    --out "/tmp/gpu-runs/$m-$p" | tail -1
done; done
} 2>&1 | tee "$OUT/gpu_check.log"
cp /tmp/gpu-runs/ssat-bf16/metrics.jsonl "$OUT/metrics_ssat_bf16.jsonl" 2>/dev/null || true
