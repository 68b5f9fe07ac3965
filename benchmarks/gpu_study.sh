#!/usr/bin/env bash
# The digits study at a budget this project's CPU cannot afford: the final recipes of docs/study.md at 300 epochs
# (15x the demo's), native 8 px and upsampled 32 px, 5 seeds each, on one GPU. Runs are tiny (a 0.8 M-parameter
# ViT on 1,293 images), so 15 share the GPU at a time; 30 runs take about 6-8 minutes on an H100/H200 (an estimate
# from the step's launch-bound latency there, not yet measured). The sweep is resumable: run the script again
# if it is cut off. Output: $OUT/study-gpu.log and $OUT/results.md (the report's tables).
# Needs .whl/ with timm==1.0.31 (`pip download --no-deps --only-binary=:all: -d .whl timm==1.0.31`) carried along.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PYTHONPATH
{
echo "=== env ($(date +%T))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"
echo "=== sweep ($(date +%T))"
timeout 520 python3 -m ssat sweep configs/study/digits-gpu.yaml --parallel 15
echo "=== report ($(date +%T))"
python3 -m ssat report runs/study-digits-gpu --out "$OUT/report" && cp "$OUT/report/results.md" "$OUT/results.md"
cat "$OUT/results.md"
echo "=== done ($(date +%T))"
} 2>&1 | tee "$OUT/study-gpu.log"
