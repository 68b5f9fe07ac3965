"""The study's other methods: SimCLR / DINO auxiliaries, self-supervised pre-training and SSL+FT fine-tuning."""

import json

import pytest
import torch
from safetensors.torch import load_file

from ssat.auxtasks.simclr import nt_xent
from ssat.cli import main
from ssat.errors import UserError
from ssat.objective import build_model


def _model(tiny_cfg, **kw):
    torch.manual_seed(0)
    return build_model(tiny_cfg(img_size=8, patch_size=2, drop_path=0.0, **kw), num_classes=10, in_chans=1)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 1, 8, 8, generator=g)
    return x, torch.randint(0, 10, (16,), generator=g), x + 0.1 * torch.randn(16, 1, 8, 8, generator=g)


@pytest.mark.parametrize("aux", ["mae", "simclr", "dino"])
def test_aux_loss_is_finite_decreases_and_reaches_the_encoder(tiny_cfg, aux):
    model = _model(tiny_cfg, aux=aux, method="pretrain")
    x, y, x2 = _batch()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(8):
        torch.manual_seed(step)
        out = model(x, y, x2)
        assert torch.isfinite(out.loss) and out.logits is None  # pre-training: no classifier stream
        opt.zero_grad()
        out.loss.backward()
        if step == 0:
            grads = [p.grad for p in model.backbone.encoder.blocks.parameters()]
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        opt.step()
        if aux != "dino":
            model.after_step((step + 1) / 8)
        # DINO's teacher (EMA) and centre are held fixed here: on one tiny batch, centring drives its targets to
        # uniform and the loss to log(K) by design; what must decrease is the student's loss against a teacher.
        losses.append(out.loss.item())
    assert min(losses[-3:]) < losses[0]


@pytest.mark.parametrize("aux", ["mae", "simclr", "dino"])
def test_lambda_weights_primary_and_aux(tiny_cfg, aux):
    model = _model(tiny_cfg, aux=aux, lam=0.3)
    x, y, x2 = _batch()
    torch.manual_seed(1)
    out = model(x, y, x2)
    expected = 0.3 * out.parts["loss_primary"] + 0.7 * out.parts["loss_aux"]
    torch.testing.assert_close(out.loss.detach(), expected)


@pytest.mark.parametrize("aux", ["simclr", "dino"])
def test_primary_view_goes_through_the_encoder_once_and_the_loss_is_unchanged(tiny_cfg, aux):
    model = _model(tiny_cfg, aux=aux, lam=0.3)  # drop_path 0: a second pass would give the same features
    x, y, x2 = _batch()
    passes = []
    model.backbone.encoder.patch_embed.register_forward_hook(lambda *a: passes.append(1))
    out = model(x, y, x2)
    assert len(passes) == 2  # the primary view (classification and the task's embedding) and the second view
    separate = 0.3 * torch.nn.functional.cross_entropy(model.backbone(x), y, label_smoothing=0.1) \
        + 0.7 * model.aux.loss(model.backbone, x2, x)[0]  # the task embeds the primary view itself
    assert len(passes) == 2 + 3
    torch.testing.assert_close(out.loss, separate)


def test_simclr_loss_is_lowest_when_the_views_coincide():
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    same = nt_xent(z, z)
    other = nt_xent(z, torch.randn(32, 16))
    near = nt_xent(z, z + 0.3 * torch.randn(32, 16))
    assert same < near < other


def test_dino_teacher_gets_no_gradient_and_follows_the_ema(tiny_cfg):
    model = _model(tiny_cfg, aux="dino", method="pretrain", ema_momentum=0.9)
    task = model.aux
    x, y, x2 = _batch()
    out = model(x, y, x2)
    out.loss.backward()
    assert all(p.grad is None for p in task.teacher_encoder.parameters())
    assert all(not p.requires_grad for p in task.teacher_head.parameters())
    student = [p.detach().clone() for p in model.backbone.encoder.parameters()]
    teacher = [p.detach().clone() for p in task.teacher_encoder.parameters()]
    with torch.no_grad():
        for p in model.backbone.encoder.parameters():
            p.add_(1.0)  # move the student
    model.after_step(0.0)  # momentum 0.9 at the start of training
    for s, t, new in zip(student, teacher, task.teacher_encoder.parameters()):
        torch.testing.assert_close(new, 0.9 * t + 0.1 * (s + 1.0))
    assert task.center.abs().sum() > 0  # centring follows the teacher's outputs


def test_pretrain_then_finetune_hands_over_the_encoder_exactly(tmp_path, tiny_flags, capsys):
    pre = tmp_path / "pre"
    assert main(["pretrain", *tiny_flags, "--method", "mae", "--fraction", "0.2", "--out", str(pre)]) == 0
    summary = json.loads((pre / "summary.json").read_text())
    assert summary["method"] == "pretrain" and summary["aux"] == "mae" and summary["test_acc1"] is None
    encoder = load_file(pre / "model.safetensors")
    assert not any(k.startswith(("decoder", "aux")) for k in encoder)  # decoder / heads are not exported

    import ssat.objective as objective
    from ssat.config import Config
    cfg = Config.from_dict({"model": "vit_test", "img_size": 8, "patch_size": 2, "method": "sslft",
                            "pretrained": str(pre),
                            "decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2})
    model = objective.build_model(cfg, num_classes=10, in_chans=1)
    assert model.aux is None
    mine = model.backbone.encoder.state_dict()
    for k, v in encoder.items():
        if not k.startswith("head."):
            assert torch.equal(mine[k], v), k
    assert not torch.equal(mine["head.weight"], encoder["head.weight"])  # the head starts afresh

    fine = tmp_path / "fine"
    assert main(["train", *tiny_flags, "--method", "sslft", "--pretrained", str(pre), "--layer-decay", "0.75",
                 "--fraction", "0.2", "--out", str(fine)]) == 0
    assert json.loads((fine / "summary.json").read_text())["pretrained"] == str(pre)
    # a config.yaml written before --pretrained existed kept the path in `init`: it still means the weights
    old = Config.from_dict({"method": "sslft", "init": str(pre)})
    assert (old.init, old.pretrained) == ("timm", str(pre))


def test_sslft_in_one_command_records_both_stages(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--method", "sslft", "--aux", "simclr", "--pretrain-epochs", "1",
                 "--fraction", "0.2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "sslft" and summary["pretrain_epochs"] == 1
    assert summary["total_train_time_s"] == pytest.approx(summary["pretrain_time_s"] + summary["train_time_s"],
                                                          abs=0.02)
    assert json.loads((out / "pretrain" / "summary.json").read_text())["aux"] == "simclr"


def test_sslft_interrupted_in_pre_training_resumes_from_out(tmp_path, tiny_flags, monkeypatch, capsys):
    from ssat import engine
    real, calls = engine.train_one_epoch, {"n": 0}

    def killed_in_second_pretrain_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", killed_in_second_pretrain_epoch)
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--method", "sslft", "--pretrain-epochs", "2", "--fraction", "0.2",
                 "--out", str(out)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert not (out / "checkpoint-last.pt").exists() and (out / "pretrain" / "checkpoint-last.pt").exists()
    monkeypatch.setattr(engine, "train_one_epoch", real)
    assert main(["train", "--resume", str(out)]) == 0  # the hint works: stage 1 resumes, stage 2 follows
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "sslft" and summary["pretrain_epochs"] == 2
    assert [r["epoch"] for r in map(json.loads, (out / "pretrain" / "metrics.jsonl").read_text().splitlines())] \
        == [1, 2]


@pytest.mark.parametrize("argv, message", [
    (["--method", "sslft"], "--method sslft fine-tunes a pre-trained encoder"),
    (["--method", "sslft", "--pretrained", "/nonexistent"], "--pretrained /nonexistent: no such file or folder"),
    (["--pretrained", "local-dir:/nonexistent"], "--pretrained local-dir:/nonexistent: no such file or folder"),
    (["--layer-decay", "0"], "--layer-decay must be in (0, 1]"),
])
def test_method_errors(tmp_path, tiny_flags, capsys, argv, message):
    assert main(["train", *tiny_flags, *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


def test_pretrain_rejects_a_non_task(tmp_path, tiny_flags, capsys):
    assert main(["pretrain", *tiny_flags, "--method", "scratch", "--out", str(tmp_path / "r")]) == 2
    assert "names the self-supervised task" in capsys.readouterr().err


def test_pretrained_takes_timm_weights_of_another_size_and_channel_count(tmp_path, tiny_flags):
    """The usual ImageNet-start baseline, offline: plain timm weights (3 channels, 16 px / patch 4) start a 1-channel
    8 px / patch 2 run, resampled as timm does; the blocks are copied exactly, the head starts afresh."""
    import timm
    from safetensors.torch import save_file

    import ssat.objective as objective
    from ssat.config import Config

    torch.manual_seed(1)
    src = timm.create_model("vit_tiny_patch16_224", pretrained=False, embed_dim=32, depth=2, num_heads=2,
                            img_size=16, patch_size=4, in_chans=3, num_classes=7)
    torch.save({"model": src.state_dict()}, tmp_path / "imagenet.pth")
    (tmp_path / "hub").mkdir()
    save_file(src.state_dict(), str(tmp_path / "hub" / "model.safetensors"))
    for given in (str(tmp_path / "imagenet.pth"), f"local-dir:{tmp_path / 'hub'}"):
        cfg = Config.from_dict({"model": "vit_test", "img_size": 8, "patch_size": 2, "method": "scratch",
                                "pretrained": given}).validate()
        mine = objective.build_model(cfg, num_classes=10, in_chans=1).backbone.encoder.state_dict()
        assert torch.equal(mine["blocks.1.mlp.fc2.weight"], src.state_dict()["blocks.1.mlp.fc2.weight"])
        assert mine["patch_embed.proj.weight"].shape == (32, 1, 2, 2) and mine["head.weight"].shape == (10, 32)
    assert main(["train", *tiny_flags, "--method", "scratch", "--pretrained", str(tmp_path / "imagenet.pth"),
                 "--per-class", "2", "--out", str(tmp_path / "run")]) == 0

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="is not a readable weights file"):
        objective.build_model(Config.from_dict({"model": "vit_test", "img_size": 8, "patch_size": 2,
                                                "pretrained": str(tmp_path / "junk.pth")}), num_classes=10, in_chans=1)
