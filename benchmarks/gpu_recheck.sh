#!/usr/bin/env bash
# A short GPU call: the host-sync test after its fix, and the digits bf16-vs-fp32 comparison (3 seeds) on the
# demo config (now with the reference's 5 warm-up epochs; the fp32 patch embedding, models/layers.Float32Conv2d).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PYTHONPATH
{
timeout 120 python3 -m pytest -q -p no:cacheprovider -p no:logging tests/test_cuda.py 2>&1 | tail -8
for s in 0 1 2; do for p in bf16 fp32; do for m in scratch ssat; do
  echo -n "seed $s $p $m: "
  timeout 60 python3 -m ssat train --config configs/demo.yaml --method $m --precision $p --device cuda --quiet \
    --seed $s --out "/tmp/gpu-runs/$m-$p-$s" | tail -1
done; done; done
} 2>&1 | tee "$OUT/gpu_recheck.log"
