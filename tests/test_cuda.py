"""CUDA-only checks (skipped without a GPU): the training step and data path on the device, bf16 autocast,
and no host synchronisation inside the step."""

import json
import warnings
from collections import Counter

import pytest
import torch

from ssat import engine
from ssat.cli import main
from ssat.data.batch_augment import BatchAugment
from ssat.data.memory import MemoryLoader
from ssat.objective import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_one_epoch_on_cuda_in_bf16_with_the_memory_path(tmp_path, tiny_flags):
    out = tmp_path / "run"
    flags = [f for f in tiny_flags if f != "cpu"]
    flags[flags.index("--device") + 1:flags.index("--device") + 1] = ["cuda"]
    assert main(["train", *flags, "--precision", "bf16", "--no-deterministic", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].startswith("cuda") and summary["precision"] == "bfloat16"
    assert summary["data_path"] == "memory" and summary["test_acc1"] > 0
    assert main(["eval", "--checkpoint", str(out), "--device", "cuda"]) == 0


def _syncs_during_training(tiny_cfg, steps: int) -> int:
    device = torch.device("cuda")
    torch.manual_seed(0)
    cfg = tiny_cfg(img_size=16, patch_size=4)
    model = build_model(cfg, num_classes=10, in_chans=3).to(device)
    optimizer = engine.build_optimizer(model, 1e-3, 0.05, device)
    scheduler = engine.build_scheduler(optimizer, epochs=1, warmup_epochs=0, updates_per_epoch=steps, min_lr=0)
    images = torch.randint(0, 256, (16 * steps, 3, 16, 16), dtype=torch.uint8)
    augment = BatchAugment(size=16, crop="pad", hflip=True, rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25,
                           mean=(0.5,) * 3, std=(0.25,) * 3)
    loader = MemoryLoader(images, list(range(10)) * (16 * steps // 10) + list(range(16 * steps % 10)),
                          batch_size=16, device=device, mean=(0.5,) * 3, std=(0.25,) * 3, augment=augment)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            engine.train_one_epoch(model, loader,
                                   engine.Updates(optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=False)),
                                   0, place=engine.Placement(device, torch.bfloat16))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # set_sync_debug_mode itself warns once per process (attributed to torch/cuda/__init__.py): not a sync.
    return Counter(f"{w.filename}:{w.lineno}" for w in caught
                   if "synchroniz" in str(w.message) and not w.filename.endswith("torch/cuda/__init__.py"))


def test_no_host_synchronisation_inside_the_step(tiny_cfg):
    """The epoch's read-out synchronises; the count must not grow with the number of steps."""
    few, many = _syncs_during_training(tiny_cfg, 3), _syncs_during_training(tiny_cfg, 12)
    assert sum(few.values()) == sum(many.values()), f"synchronising lines: {many}"


def test_bf16_matches_fp32_on_cuda(tiny_cfg):
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(tiny_cfg(img_size=8, patch_size=2, drop_path=0.0), num_classes=10, in_chans=1).to(device)
    x, y = torch.randn(64, 1, 8, 8, device=device), torch.randint(0, 10, (64,), device=device)
    losses = []
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            losses.append(model(x, y).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-2)


def test_bench_profile_on_cuda_counts_kernels_and_finds_no_host_sync(capsys, tmp_path):
    assert main(["bench", "--model", "vit_test", "--img-size", "8", "--patch-size", "2", "--batch-size", "8",
                 "--steps", "2", "--warmup", "2", "--no-peak", "--device", "cuda", "--profile", str(tmp_path),
                 "--epoch-images", "64"]) == 0
    r = json.loads(capsys.readouterr().out)
    p = r["profile"]
    assert p["host_syncs_per_step"] == 0 and p["kernels_per_step"] > 10
    assert 0 < p["device_busy"] <= 1.05 and p["device_ms_per_step"] > 0
    assert r["epoch"]["steps"] == 8 and r["epoch"]["epoch_over_steps"] > 0
