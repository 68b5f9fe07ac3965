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
# The state-of-the-art comparison (configs/sota-cifar.yaml: CvT-13 + drloc, SL-ViT, DeiT-Ti + guidance, each with
# and without SSAT): only where CIFAR is on the machine (data/cifar-10-batches-py, data/cifar-100-python; the lent
# GPU cannot download and CIFAR is larger than what a call carries). Its 100 runs are days of GPU time: set
# SOTA_SECONDS to spend that long on it (the next call resumes it; teachers first).
if [ -n "${SOTA_SECONDS:-}" ] && [ -d data/cifar-10-batches-py ] && [ -d data/cifar-100-python ]; then
  echo "=== sota-cifar ($(date +%T))"
  timeout "$SOTA_SECONDS" sh -c 'python3 -m ssat sweep configs/sota-cifar-teachers.yaml --parallel 2 &&
    python3 -m ssat sweep configs/sota-cifar.yaml --parallel 4'
  python3 -m ssat report runs/sota-cifar --out "$OUT/sota-report" 2>/dev/null && cat "$OUT/sota-report/results.md"
else
  echo "=== sota-cifar skipped: set SOTA_SECONDS and put CIFAR-10 / CIFAR-100 under data/"
fi
echo "=== done ($(date +%T))"
} 2>&1 | tee "$OUT/study-gpu.log"
