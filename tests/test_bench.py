"""`ssat bench` and the FLOP counts it (and the run summaries) rest on."""

import json
import statistics
from pathlib import Path

import pytest
import torch

from ssat.cli import main
from ssat.commands.bench import matmul_peak_gflops, paired_ratio, paired_ratio_quartiles
from ssat.flops import count_flops, inference_flops_per_image, train_flops_per_image
from ssat.objective import build_model


def vit_test_forward_flops(tokens: int, dim=32, depth=2, heads=2, mlp=4, patches=16, patch_pixels=4, classes=10):
    """Hand count (2 FLOPs per multiply-add) of the tiny test ViT's forward pass for one image."""
    per_block = (tokens * dim * 3 * dim             # qkv
                 + 2 * heads * tokens * tokens * (dim // heads)  # q·kᵀ and attention·v
                 + tokens * dim * dim               # output projection
                 + 2 * tokens * dim * mlp * dim)    # MLP
    return 2 * (patches * dim * patch_pixels + depth * per_block + dim * classes)


def test_inference_flops_equal_the_hand_count(tiny_cfg):
    model = build_model(tiny_cfg(img_size=8, patch_size=2), num_classes=10, in_chans=1)
    counted = inference_flops_per_image(model.backbone, torch.randn(4, 1, 8, 8))
    assert counted == pytest.approx(vit_test_forward_flops(tokens=17), rel=0.01)


def test_ssat_training_flops_add_the_masked_stream_and_decoder(tiny_cfg):
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    scratch = build_model(tiny_cfg(method="scratch", img_size=8, patch_size=2), num_classes=10, in_chans=1)
    ssat = build_model(tiny_cfg(method="ssat", img_size=8, patch_size=2), num_classes=10, in_chans=1)
    base, joint = train_flops_per_image(scratch, x, y), train_flops_per_image(ssat, x, y)
    aux = count_flops(lambda: ssat.aux.loss(ssat.backbone, x)[0].backward()) / 4
    assert joint == pytest.approx(base + aux, rel=0.01)
    # The masked encoder pass sees 1 + 4 tokens, not 17: its forward is far cheaper than the primary's.
    masked_forward = count_flops(lambda: ssat.backbone.forward_masked(x, torch.zeros(4, 4, dtype=torch.long))) / 4
    assert masked_forward < 0.35 * vit_test_forward_flops(tokens=17)


def test_bench_prints_one_json_line_with_the_comparison(capsys):
    assert main(["bench", "--model", "vit_test", "--img-size", "8", "--patch-size", "2", "--batch-size", "8",
                 "--steps", "2", "--warmup", "1", "--compare", "--data", "--no-peak", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in ("images_per_s", "ms_per_step", "gflops_per_s", "gflop_per_image", "loader_images_per_s"):
        assert r[key] > 0, key
    assert r["method"] == "ssat" and r["compare"]["method"] == "scratch"
    assert r["ssat_over_scratch_flops"] > 1
    assert r["ssat_over_scratch_step_time"] > 0
    q1, q3 = r["ssat_over_scratch_step_time_quartiles"]
    assert 0 < q1 <= r["ssat_over_scratch_step_time"] <= q3


def test_step_time_ratio_is_paired_round_by_round():
    # A slow spell in rounds 3-5 hits the first method for two rounds and the second for three; pairing rounds
    # keeps the true 2x, where the ratio of the two medians would say 0.67x.
    slow_a, slow_b = [1, 1, 1, 3, 3], [0.5, 0.5, 1.5, 1.5, 1.5]
    assert paired_ratio(slow_a, slow_b) == pytest.approx(2.0)
    assert statistics.median(slow_a) / statistics.median(slow_b) == pytest.approx(2 / 3)


def test_step_time_ratio_quartiles_show_the_rounds_spread():
    # Per-round ratios 1, 2, 3, 4, 5: the median is 3, the quartiles 2 and 4.
    assert paired_ratio_quartiles([1, 2, 3, 4, 5], [1, 1, 1, 1, 1]) == pytest.approx([2, 4])
    assert paired_ratio_quartiles([3], [2]) == pytest.approx([1.5, 1.5])  # one round: no spread to show


def test_matmul_peak_is_measured():
    assert matmul_peak_gflops(torch.device("cpu"), None, seconds=0.05) > 0.1


@pytest.mark.parametrize("argv,message", [
    (["--steps", "0"], "--steps, --warmup, --classes and --profile-steps must be at least 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),  # the same check as `ssat train`
    (["--img-size", "30"], "--img-size 30 is not a multiple of --patch-size 4"),
    (["--method", "pretrain"], "ssat bench times --method scratch or ssat"),
])
def test_bench_rejects_bad_numbers_with_trains_messages(capsys, argv, message):
    assert main(["bench", "--device", "cpu", "--no-peak", *argv]) == 2
    assert message in capsys.readouterr().err


def test_bench_times_the_decoder_heads_asked_for(capsys):
    assert main(["bench", "--model", "vit_test", "--img-size", "8", "--patch-size", "2", "--batch-size", "4",
                 "--steps", "1", "--warmup", "1", "--no-peak", "--device", "cpu", "--decoder-heads", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["decoder_heads"] == 4
    # the value reaches the model's config: one that does not divide the decoder's width is refused there
    assert main(["bench", "--device", "cpu", "--decoder-heads", "3"]) == 2
    assert "--decoder-dim (128) must be divisible by --decoder-heads (3)" in capsys.readouterr().err


TINY = ["bench", "--model", "vit_test", "--img-size", "8", "--patch-size", "2", "--batch-size", "4", "--steps", "1",
        "--warmup", "1", "--no-peak", "--device", "cpu"]


def test_bench_profile_says_where_each_steps_time_goes(capsys, tmp_path):
    assert main([*TINY, "--compare", "--profile", str(tmp_path), "--profile-steps", "2"]) == 0
    r = json.loads(capsys.readouterr().out)
    for side in (r, r["compare"]):
        p = side["profile"]
        assert p["steps"] == 2 and p["ms_per_step"] > 0
        assert p["host_syncs_per_step"] == 0  # a CPU never waits for a device
        times = [op["ms_per_step"] for op in p["top_ops"]]
        assert len(times) == 10 and times == sorted(times, reverse=True) and times[0] > 0
        assert json.loads(Path(p["trace"]).read_text())["traceEvents"]  # a Chrome trace per method
    assert {Path(r["profile"]["trace"]).name, Path(r["compare"]["profile"]["trace"]).name} == {
        "trace-ssat.json", "trace-scratch.json"}
    # the SSAT step dispatches more ops than scratch's: a second encoder pass and a decoder
    assert r["profile"]["aten_ops_per_step"] > 1.3 * r["compare"]["profile"]["aten_ops_per_step"]


def test_bench_times_a_whole_in_memory_epoch_against_its_steps(capsys):
    assert main([*TINY, "--epoch-images", "10"]) == 0
    epoch = json.loads(capsys.readouterr().out)["epoch"]
    assert epoch["images"] == 10 and epoch["steps"] == 2  # full batches of 4 only, as in training
    assert epoch["epoch_s"] > 0 and epoch["steps_s"] > 0
    assert epoch["epoch_over_steps"] == pytest.approx(epoch["epoch_s"] / epoch["steps_s"], rel=0.05)


@pytest.mark.parametrize("argv,message", [
    (["--profile-steps", "0"], "--profile-steps must be at least 1"),
    (["--epoch-images", "-1"], "--epoch-images must be 0 (off) or a number of images, got -1"),
    (["--compile-mode", "fast"], "unknown compile-mode 'fast'; choose one of: default, max-autotune"),
    (["--profile", "/proc/no-such-folder"], "--profile /proc/no-such-folder: cannot create the folder"),
])
def test_bench_rejects_bad_profile_and_epoch_values(capsys, argv, message):
    assert main(["bench", "--device", "cpu", "--no-peak", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_ssat_models_counts_on_the_meta_device_what_real_tensors_count(capsys):
    """`ssat models` counts FLOPs without arithmetic (meta tensors); the count is the real one, and an absurd
    --img-size is one line instead of minutes and an allocator traceback."""
    import json

    from ssat.cli import main
    from ssat.config import Config, default_patch_size
    from ssat.flops import inference_flops_per_image
    from ssat.models import MODELS, build_backbone, input_shape
    assert main(["models", "--img-size", "32", "--json"]) == 0
    rows = {r["model"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    for name in ("vit_mini", "cvt_13", "video_vit_tiny"):
        frames = Config.frames if MODELS[name].capabilities.video else 0
        real = build_backbone(name, img_size=32, patch_size=default_patch_size(32, name), in_chans=3,
                              num_classes=10, frames=frames)
        x = torch.randn(1, *input_shape(3, 32, frames))
        assert rows[name]["gflops"] == round(inference_flops_per_image(real, x) / 1e9, 3), name
    assert main(["models", "--img-size", "100000"]) == 2
    assert "beyond what ssat models describes (4096 px at most)" in capsys.readouterr().err
    assert main(["models", "--img-size", "30", "--patch-size", "5", "--json"]) == 0
    assert all(json.loads(r)["patch_size"] == 5 for r in capsys.readouterr().out.splitlines())
