#!/usr/bin/env bash
# A short GPU call for what the CPU cannot check: the CUDA tests (host-sync count, bf16 step) and the NCCL path of
# DistributedDataParallel (one rank: one GPU cannot host two NCCL ranks), `ssat bench` on the GPU with the paired
# SSAT/scratch ratio, and the digits demo config in bf16 vs fp32 on seeds 0-2. Output goes to $OUT (or ./gpu-out).
# Tests take 1.5 minutes, the bench 1, each digits run ~40 s including start-up (H100, H200): run one after another the
# twelve runs overran a 600 s call twice, so they run four at a time (their train_time_s then means little).
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
section "digits demo config, seeds 0-2, bf16 vs fp32 (4 runs at a time: the GPU is mostly idle at this size)"
for s in 0 1 2; do
  for p in bf16 fp32; do for m in scratch ssat; do
    timeout 120 python3 -m ssat train --config configs/demo.yaml --method $m --precision $p --device cuda --quiet \
      --no-energy --seed $s --out "/tmp/gpu-runs/$m-$p-$s" 2>&1 | tail -1 | sed "s/^/seed $s $p $m: /" &
  done; done
  wait
done
section done
} 2>&1 | tee "$OUT/gpu_recheck.log"
