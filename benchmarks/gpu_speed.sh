#!/usr/bin/env bash
# One prepared GPU session for the step's speed (issue 19), at most 9 minutes on an H100/H200: where the time goes
# (profiles of scratch and SSAT), eager vs compiled vs compiled + CUDA graphs at ViT-T / 32 px / patch 4 / batch
# 1024 and at 224 px / patch 16 / batch 256, an epoch of 50,000 in-memory images against its steps' time, and the
# accuracy check (digits demo config, 3 seeds: eager fp32 vs compiled bf16). Output in $OUT (or ./gpu-out):
# gpu_speed.log, bench.jsonl (+ bench_stderr.log: compile warnings, e.g. skipped CUDA graphs), profiles/ (Chrome
# traces), accuracy.jsonl and summary.md. From the repo root:
#   bash benchmarks/gpu_speed.sh
# Sections run in order of importance, each cut to what is left of $BUDGET seconds. A CPU smoke test of the script
# itself (about 10 minutes on 2 cores; compiling dominates):
#   PY=.venv/bin/python DEVICE=cpu PREC=fp32 BIG=64 BATCH=8 BIGBATCH=2 EPOCH=64 STEPS=2 SEEDS=2 EPOCHS=1 BUDGET=900 \
#     bash benchmarks/gpu_speed.sh
# Needs .whl/ with the pure-Python pins (timm) carried along when the machine lacks them (as gpu_check.sh).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT/profiles"
DEVICE=${DEVICE:-cuda} PREC=${PREC:-bf16} BIG=${BIG:-224} BATCH=${BATCH:-1024} BIGBATCH=${BIGBATCH:-256}
EPOCH=${EPOCH:-50000} STEPS=${STEPS:-30} SEEDS=${SEEDS:-3} EPOCHS=${EPOCHS:-20}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
PY=${PY:-python3}
BUDGET=${BUDGET:-540}  # seconds for all sections: each is cut to what is left, in the order of what matters most
section() { echo; echo "=== $1 ($(date +%T), ${SECONDS}s)"; }
limit() { local left=$((BUDGET - SECONDS)); echo $(( left < $1 ? (left > 5 ? left : 5) : $1 )); }
bench() {  # label, seconds, flags...
  local label=$1 seconds; seconds=$(limit "$2"); shift 2
  timeout "$seconds" $PY -m ssat bench --device $DEVICE --precision $PREC --compare --steps $STEPS --warmup 5 "$@" \
    2>>"$OUT/bench_stderr.log" | sed "s/^{/{\"label\": \"$label\", /" | tee -a "$OUT/bench.jsonl"
}
: > "$OUT/bench.jsonl"; : > "$OUT/accuracy.jsonl"
{
section env
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"

section "32 px / patch 4 / batch $BATCH: eager, with profile, data path and a $EPOCH-image epoch"
bench eager-32 90 --batch-size $BATCH --data --profile "$OUT/profiles/32px" --epoch-images $EPOCH
section "32 px: compiled (its warm-up includes compiling both methods)"
bench compiled-32 200 --batch-size $BATCH --compile
section "32 px: compiled + CUDA graphs (reduce-overhead; the compile cache is warm now), profile and epoch"
bench graphs-32 150 --batch-size $BATCH --compile --compile-mode reduce-overhead \
  --profile "$OUT/profiles/32px-graphs" --epoch-images $EPOCH

section "accuracy: digits demo config, $SEEDS seeds, eager fp32 vs compiled $PREC (runs side by side)"
seconds=$(limit 200)
for s in $(seq 0 $((SEEDS - 1))); do
  for variant in "eager fp32" "compiled $PREC"; do
    set -- $variant
    flags="--precision $2"; [ "$1" = compiled ] && flags="$flags --compile"
    ( timeout "$seconds" $PY -m ssat train --config configs/demo.yaml --method ssat --epochs $EPOCHS --seed $s \
        $flags --device $DEVICE --no-energy --quiet --out "/tmp/speed-runs/$1-s$s" >/dev/null 2>&1
      $PY -c "import json, sys; r = json.load(open(sys.argv[1])); print(json.dumps({'variant': sys.argv[2], 'seed': $s,
        'test_acc1': r['test_acc1'], 'test_acc1_selected': r.get('test_acc1_selected'),
        'train_s': r.get('train_time_s')}))" "/tmp/speed-runs/$1-s$s/summary.json" "$variant" 2>/dev/null ) &
  done
done | tee -a "$OUT/accuracy.jsonl"

section "$BIG px / patch 16 / batch $BIGBATCH: eager with profile, then compiled + CUDA graphs"
bench eager-$BIG 60 --img-size $BIG --patch-size 16 --batch-size $BIGBATCH --profile "$OUT/profiles/${BIG}px"
bench graphs-$BIG 200 --img-size $BIG --patch-size 16 --batch-size $BIGBATCH --compile --compile-mode reduce-overhead

section summary
$PY - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| run | SSAT img/s | scratch img/s | SSAT/scratch step | SSAT fraction of peak | kernels/step SSAT "
      "(scratch) | device busy SSAT | epoch / steps | warm-up s |")
print("|---|---|---|---|---|---|---|---|---|")
for line in (out / "bench.jsonl").read_text().splitlines():
    r = json.loads(line)
    ssat, scratch = (r, r["compare"]) if r["method"] == "ssat" else (r["compare"], r)
    kernels = lambda side: (side.get("profile") or {}).get("kernels_per_step",
                                                           (side.get("profile") or {}).get("aten_ops_per_step", ""))
    epoch = (ssat.get("epoch") or {}).get("epoch_over_steps", "")
    print(f"| {r['label']} | {ssat['images_per_s']:,} | {scratch['images_per_s']:,} | "
          f"{r['ssat_over_scratch_step_time']} | {r.get('fraction_of_peak', '')} | "
          f"{f'{kernels(ssat)} ({kernels(scratch)})' if kernels(ssat) != '' else ''} | {(ssat.get('profile') or {}).get('device_busy', '')} | {epoch} | "
          f"{ssat['warmup_s']} |")
rows = [json.loads(line) for line in (out / "accuracy.jsonl").read_text().splitlines() if line.strip()]
print("\n| digits demo config, SSAT | seeds | test top-1 (last) | test top-1 (val-selected) | train s |")
print("|---|---|---|---|---|")
for variant in sorted({r["variant"] for r in rows}):
    mine = [r for r in rows if r["variant"] == variant]
    stat = lambda k: (f"{statistics.mean(r[k] for r in mine):.2f} ± "
                      f"{statistics.stdev(r[k] for r in mine) if len(mine) > 1 else 0:.2f}")
    print(f"| {variant} | {len(mine)} | {stat('test_acc1')} | {stat('test_acc1_selected')} | "
          f"{statistics.mean(r['train_s'] or 0 for r in mine):.0f} |")
for line in (out / "bench.jsonl").read_text().splitlines():
    r = json.loads(line)
    for side in (r, r["compare"]):
        if side.get("profile"):
            ops = ", ".join(f"{o['op']} {o['ms_per_step']} ms" for o in side["profile"]["top_ops"][:5])
            print(f"\n{r['label']} {side['method']}: host syncs/step {side['profile']['host_syncs_per_step']}; "
                  f"top ops: {ops}")
PY
grep -i "skipping cudagraphs\|graph break\|recompil" "$OUT/bench_stderr.log" 2>/dev/null | sort | uniq -c | head -10
section done
} 2>&1 | tee "$OUT/gpu_speed.log"
