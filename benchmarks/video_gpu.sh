#!/usr/bin/env bash
# One prepared GPU session for the video path (issue 17): time a ViT-S VideoMAE + SSAT step at the study's shape
# (16 frames of 224 px, tubelets 2 x 16 x 16 = 1,568 tokens, batch 8) against scratch, with the clip loader, then a
# short synthetic training (generated FaceForensics++-layout videos) on the GPU with cross-manipulation and
# zero-shot evaluation. Needs PyAV (pip install 'ssat[video]'). Output in $OUT (or ./gpu-out). From the repo root:
#   bash benchmarks/video_gpu.sh          (about 5 minutes on an H100-class GPU)
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/src:$PWD/tests${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=python3
section() { echo; echo "=== $1 ($(date +%T))"; }
{
section env
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, timm, av; print('torch', torch.__version__, 'timm', timm.__version__, 'av', av.__version__)"

section "bench: video_vit_small, 16 x 224 px, batch 8, bf16, SSAT vs scratch"
timeout 240 $PY -m ssat bench --device cuda --precision bf16 --model video_vit_small --frames 16 --img-size 224 \
  --patch-size 16 --batch-size 8 --mask-ratio 0.9 --decoder-dim 192 --decoder-depth 4 --decoder-heads 3 \
  --global-pool avg --compare --data --steps 20 --warmup 5 | tee "$OUT/bench_video.jsonl"

section "synthetic FaceForensics++ (generated), 3 epochs per method, then cross-manipulation + Celeb-DF"
$PY - <<'PY'
from pathlib import Path
from video_fixtures import faceforensics_tree, celebdf_tree
faceforensics_tree(Path("/tmp/vid/ff"), pairs_per_split=(40, 10, 10), frames=32, size=64)
celebdf_tree(Path("/tmp/vid/cdf"), n=10, frames=32, size=64)
PY
common="--dataset faceforensics --data-root /tmp/vid/ff --manipulations Deepfakes --model video_vit_small \
  --frames 16 --frame-size 64 --img-size 64 --patch-size 16 --global-pool avg --decoder-dim 192 --decoder-depth 4 \
  --decoder-heads 3 --norm-pix-loss --epochs 3 --batch-size 8 --device cuda --clip-cache /tmp/vid/cache --quiet"
for m in scratch ssat; do
  timeout 200 $PY -m ssat train $common --method $m --out /tmp/vid/runs/$m | tail -1
  for t in Face2Face FaceSwap NeuralTextures; do
    timeout 60 $PY -m ssat eval --checkpoint /tmp/vid/runs/$m --manipulations $t --device cuda
  done
  timeout 60 $PY -m ssat eval --checkpoint /tmp/vid/runs/$m --dataset celebdf --data-root /tmp/vid/cdf --device cuda
done | tee "$OUT/video_runs.jsonl"
} 2>&1 | tee "$OUT/video_gpu.log"
