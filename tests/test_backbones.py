"""Every backbone x method pair that is allowed builds and trains a step at 32 px; the others are a clear error."""

import pytest
import torch

from ssat.cli import main
from ssat.config import Config
from ssat.objective import build_model

ALLOWED = [(m, "scratch", "mae") for m in ("vit_tiny", "vit_small", "swin_tiny", "cvt_13", "resnet50")] + \
          [(m, "ssat", aux) for m in ("vit_tiny", "swin_tiny", "cvt_13") for aux in ("mae", "simclr", "dino")]


@pytest.mark.slow
@pytest.mark.parametrize("model, method, aux", ALLOWED)
def test_allowed_pairs_train_a_step_at_32px(model, method, aux):
    torch.manual_seed(0)
    cfg = Config(model=model, method=method, aux=aux, img_size=32, patch_size=4 if model != "swin_tiny" else 2,
                 drop_path=0.1).validate()
    net = build_model(cfg, num_classes=10, in_chans=3)
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    before = [p.detach().clone() for p in net.backbone.parameters() if p.requires_grad]
    out = net(x, y, x.flip(-1) if aux != "mae" else None)
    assert torch.isfinite(out.loss) and out.logits.shape == (4, 10)
    out.loss.backward()
    opt.step()
    net.after_step(0.5)
    after = [p.detach() for p in net.backbone.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    if method == "ssat":
        assert set(out.parts) >= {"loss_primary", "loss_aux"}
    assert net.predict(x).shape == (4, 10)


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
@pytest.mark.parametrize("model, aux", [("swin_tiny", "mae"), ("cvt_13", "dino"), ("vit_small", "simclr")])
def test_sslft_in_one_command_on_other_backbones(tmp_path, tiny_flags, model, aux):
    """Pre-train (1 epoch) then fine-tune (1 epoch) through the CLI at 32 px, on hierarchical backbones too."""
    flags = [f for f in tiny_flags]
    flags[flags.index("--model") + 1] = model
    out = tmp_path / model
    assert main(["train", *flags, "--method", "sslft", "--aux", aux, "--pretrain-epochs", "1", "--img-size", "32",
                 "--fraction", "0.03", "--batch-size", "8", "--out", str(out)]) == 0
    summary = __import__("json").loads((out / "summary.json").read_text())
    assert summary["method"] == "sslft" and summary["model"] == model and summary["pretrain_epochs"] == 1
    assert (out / "pretrain" / "model.safetensors").exists()
