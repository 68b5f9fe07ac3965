#!/usr/bin/env bash
# One prepared GPU session for the video path (issue 17): time a ViT-S VideoMAE + SSAT step at the study's shape
# (16 frames of 224 px, tubelets 2 x 16 x 16 = 1,568 tokens, batch 8) against scratch, with the clip loader, then a
# short synthetic training (generated FaceForensics++-layout videos) on the GPU with cross-manipulation and
# zero-shot evaluation. Needs PyAV (pip install 'ssat[video]'). Output in $OUT (or ./gpu-out). From the repo root:
#   bash benchmarks/video_gpu.sh          (about 5 minutes on an H100-class GPU)
# A CPU smoke test of the script itself (2.5 min): DEVICE=cpu SIZE=64 FRAMES=4 BATCH=2 STEPS=2 EPOCHS=1 PAIRS=4
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
DEVICE=${DEVICE:-cuda} SIZE=${SIZE:-224} FRAMES=${FRAMES:-16} BATCH=${BATCH:-8} STEPS=${STEPS:-20}
EPOCHS=${EPOCHS:-3} PAIRS=${PAIRS:-40}
export PYTHONPATH=$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
section() { echo; echo "=== $1 ($(date +%T))"; }
{
section env
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm, av; print('torch', torch.__version__, 'timm', timm.__version__, 'av', av.__version__)"

section "bench: video_vit_small, $FRAMES x $SIZE px, batch $BATCH, bf16, SSAT vs scratch"
timeout 240 $PY -m ssat bench --device $DEVICE --precision bf16 --model video_vit_small --frames $FRAMES \
  --img-size $SIZE --patch-size 16 --batch-size $BATCH --mask-ratio 0.9 --decoder-dim 192 --decoder-depth 4 \
  --decoder-heads 3 --global-pool avg --compare --data --steps $STEPS --warmup 2 | tee "$OUT/bench_video.jsonl"

section "synthetic FaceForensics++ (generated), $EPOCHS epochs per method, then cross-manipulation + Celeb-DF"
rm -rf /tmp/vid
$PY - <<PY
from pathlib import Path
from video_fixtures import faceforensics_tree, celebdf_tree
faceforensics_tree(Path("/tmp/vid/ff"), pairs_per_split=($PAIRS, 5, 10), frames=32, size=64)
celebdf_tree(Path("/tmp/vid/cdf"), n=10, frames=32, size=64)
PY
common="--dataset faceforensics --data-root /tmp/vid/ff --manipulations Deepfakes --model video_vit_small \
  --frames $FRAMES --frame-size 64 --img-size 64 --patch-size 16 --global-pool avg --decoder-dim 192 \
  --decoder-depth 4 --decoder-heads 3 --norm-pix-loss --epochs $EPOCHS --batch-size 8 --device $DEVICE \
  --clip-cache /tmp/vid/cache --quiet"
for m in scratch ssat; do
  timeout 200 $PY -m ssat train $common --method $m --out /tmp/vid/runs/$m | tail -1
  for t in Face2Face FaceSwap NeuralTextures; do
    timeout 60 $PY -m ssat eval --checkpoint /tmp/vid/runs/$m --manipulations $t --device $DEVICE
  done
  timeout 60 $PY -m ssat eval --checkpoint /tmp/vid/runs/$m --dataset celebdf --data-root /tmp/vid/cdf \
    --device $DEVICE
done | tee "$OUT/video_runs.jsonl"
} 2>&1 | tee "$OUT/video_gpu.log"
