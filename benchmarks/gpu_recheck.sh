#!/usr/bin/env bash
# A short GPU call for what the CPU cannot check: the CUDA tests (host-sync count, bf16 step) and the NCCL path of
# DistributedDataParallel (one rank: one GPU cannot host two NCCL ranks), `ssat bench` on the GPU with the paired
# SSAT/scratch ratio, and the digits demo config in bf16 vs fp32 on seeds 0-2. Output goes to $OUT (or ./gpu-out).
# About 9 minutes on an H100 (tests 1.5, bench 1, twelve digits runs ~30 s each): give the call timeout_s 600.
# Needs .whl/ with timm==1.0.31 (`pip download --no-deps --only-binary=:all: -d .whl timm==1.0.31`).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PYTHONPATH
section() { echo; echo "=== $1 ($(date +%T))"; }
{
section env
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, 'nccl', torch.cuda.nccl.version())"
section "pytest: CUDA tests + one-rank NCCL DDP"
timeout 240 python3 -m pytest -q -rs -p no:cacheprovider -p no:logging tests/test_cuda.py \
  "tests/test_ddp.py::test_the_ddp_path_with_one_rank_matches_a_plain_run_and_resumes[cuda]" 2>&1 | tail -8
section "bench bf16, batch 128 and 1024"
for b in 128 1024; do
  timeout 90 python3 -m ssat bench --device cuda --precision bf16 --batch $b --compare --data --steps 30 --warmup 5
done | tee "$OUT/bench_cuda.jsonl"
section "digits demo config, seeds 0-2, bf16 vs fp32"
for s in 0 1 2; do for p in bf16 fp32; do for m in scratch ssat; do
  echo -n "seed $s $p $m: "
  timeout 60 python3 -m ssat train --config configs/demo.yaml --method $m --precision $p --device cuda --quiet \
    --no-energy --seed $s --out "/tmp/gpu-runs/$m-$p-$s" | tail -1
done; done; done
section done
} 2>&1 | tee "$OUT/gpu_recheck.log"
