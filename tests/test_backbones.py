"""Backbone x auxiliary task rules (auto, refusals, SimMIM masking) and SSL+FT through the CLI on every family; the
full backbone x method x task x size matrix is tests/test_contract.py."""

import pytest
import torch

from ssat.cli import main
from ssat.config import Config
from ssat.objective import build_model


def test_auto_picks_the_masked_task_a_backbone_supports_and_mae_on_swin_is_refused(tmp_path, tiny_flags, capsys):
    from ssat.auxtasks import resolve_aux
    from ssat.models import MODELS
    assert [resolve_aux("auto", MODELS[m].capabilities) for m in ("vit_tiny", "swin_tiny", "cvt_13")] == \
        ["mae", "simmim", "simmim"]
    with pytest.raises(__import__("ssat").UserError,
                       match="use --aux dino or drloc or guidance or simclr or simmim with it"):
        build_model(Config(model="swin_tiny", method="ssat", aux="mae", img_size=32, patch_size=2).validate(),
                    num_classes=10, in_chans=3)
    out = tmp_path / "run"  # the run records the task that actually ran, not 'auto'
    assert main(["train", *tiny_flags, "--aux", "auto", "--fraction", "0.05", "--out", str(out)]) == 0
    assert __import__("json").loads((out / "summary.json").read_text())["aux"] == "mae"


def test_layer_decay_on_a_backbone_without_depth_groups_is_refused():
    with pytest.raises(__import__("ssat").UserError, match="--layer-decay 0.75 needs a backbone with blocks grouped"):
        build_model(Config(model="cvt_13", method="scratch", img_size=32, patch_size=4, layer_decay=0.75).validate(),
                    num_classes=10, in_chans=3)


def test_hierarchical_mae_masks_units_and_scores_masked_pixels_only():
    torch.manual_seed(0)
    net = build_model(Config(model="cvt_13", method="ssat", img_size=32, patch_size=4).validate(), num_classes=10,
                      in_chans=3)
    task = net.aux
    assert type(task).__name__ == "SimMIMTask" and task.units == 8 and task.unit == 4
    mask = task.random_unit_mask(3, "cpu")
    assert mask.shape == (3, 8, 8) and (mask.sum(dim=(1, 2)) == 64 - 16).all()  # 75 % of 64 units masked
    x = torch.randn(2, 3, 32, 32)
    prediction = torch.randn(2, 3, 32, 32)
    task.decoder = torch.nn.Sequential(torch.nn.Flatten(0), torch.nn.Identity())  # replaced below
    task.decoder.forward = lambda features: prediction
    torch.manual_seed(5)
    loss, _ = task.loss(net.backbone, x)
    torch.manual_seed(5)
    units = task.random_unit_mask(2, "cpu")
    pixels = units.repeat_interleave(4, 1).repeat_interleave(4, 2).unsqueeze(1)
    expected = (((prediction - x) ** 2).mean(1, keepdim=True) * pixels).sum() / pixels.sum()
    torch.testing.assert_close(loss, expected)  # the mean over masked pixels only


@pytest.mark.parametrize("argv", [["--method", "ssat"], ["--method", "pretrain"]])
def test_resnet_with_an_auxiliary_task_is_a_clear_error(tmp_path, capsys, argv):
    code = main(["train", "--model", "resnet50", *argv, "--epochs", "1", "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "reference baseline trained with --method scratch only" in err


def test_models_command_lists_params_and_gflops(capsys):
    assert main(["models", "--json"]) == 0
    rows = {r["model"]: r for r in map(__import__("json").loads, capsys.readouterr().out.splitlines())}
    assert {"vit_tiny", "vit_small", "swin_tiny", "cvt_13", "resnet50"} <= set(rows)
    assert rows["vit_tiny"]["params_m"] == pytest.approx(5.36, abs=0.05)
    assert rows["resnet50"]["methods"] == "scratch"
    assert all(r["gflops"] > 0 for r in rows.values())


@pytest.mark.slow
@pytest.mark.parametrize("model, aux", [("swin_tiny", "simmim"), ("cvt_13", "dino"), ("vit_small", "simclr")])
def test_sslft_in_one_command_on_other_backbones(tmp_path, tiny_flags, model, aux, shallow_backbones):
    """Pre-train (1 epoch) then fine-tune (1 epoch) through the CLI at 32 px, on hierarchical backbones too."""
    flags = [f for f in tiny_flags]
    flags[flags.index("--model") + 1] = model
    out = tmp_path / model
    assert main(["train", *flags, "--method", "sslft", "--aux", aux, "--pretrain-epochs", "1", "--img-size", "32",
                 "--fraction", "0.03", "--batch-size", "8", "--out", str(out)]) == 0
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["method"] == "sslft" and summary["model"] == model and summary["pretrain_epochs"] == 1
    assert (out / "pretrain" / "model.safetensors").exists()
