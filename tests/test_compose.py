"""SSAT composed with other small-data methods (issue 29): several auxiliary tasks at once (`--aux a+b`), tasks that
read the token maps of the classification pass (drloc), their options and refusals."""

import json

import pytest
import torch

from conftest import run_error
from ssat.auxtasks import build_aux
from ssat.auxtasks.drloc import final_map, sample_pairs
from ssat.auxtasks.group import AuxGroup
from ssat.cli import main
from ssat.objective import build_model
from ssat.runs import seed_everything


def test_drloc_targets_on_a_4x4_grid_by_hand():
    maps = torch.zeros(1, 1, 4, 4)
    flat = lambda r, c: r * 4 + c
    pos_u = torch.tensor([[flat(0, 0), flat(3, 1), flat(2, 2)]])
    pos_v = torch.tensor([[flat(3, 3), flat(0, 2), flat(2, 2)]])
    _, target = sample_pairs(maps, pos_u, pos_v)
    assert target.tolist() == [[[3.0, 3.0], [3.0, 1.0], [0.0, 0.0]]]
    _, signed = sample_pairs(maps, pos_u, pos_v, signed=True)
    assert signed.tolist() == [[[-3.0, -3.0], [3.0, -1.0], [0.0, 0.0]]]


def test_drloc_gathers_the_right_tokens_of_a_non_square_map():
    rows, cols = torch.meshgrid(torch.arange(3), torch.arange(5), indexing="ij")
    maps = (10 * rows + cols).float().view(1, 1, 3, 5).repeat(2, 1, 1, 1)  # value = 10·row + col
    pos_u = torch.tensor([[0, 4, 7], [14, 10, 5]])  # (0,0) (0,4) (1,2) | (2,4) (2,0) (1,0)
    pos_v = torch.tensor([[14, 5, 7], [0, 3, 9]])   # (2,4) (1,0) (1,2) | (0,0) (0,3) (1,4)
    pairs, target = sample_pairs(maps, pos_u, pos_v)
    assert pairs[..., 0].tolist() == [[0, 4, 12], [24, 20, 10]]
    assert pairs[..., 1].tolist() == [[24, 10, 12], [0, 3, 14]]
    assert target.tolist() == [[[2, 4], [1, 4], [0, 0]], [[2, 4], [2, 3], [0, 4]]]


def test_drloc_pools_a_dense_last_map_only_from_8_tokens_a_side():
    class Dense:
        dense_last_map = True
    assert final_map(Dense(), torch.zeros(1, 4, 8, 8)).shape[-2:] == (4, 4)
    assert final_map(Dense(), torch.zeros(1, 4, 7, 7)).shape[-2:] == (7, 7)
    assert final_map(object(), torch.zeros(1, 4, 14, 14)).shape[-2:] == (14, 14)


def _one_step(model, seed=0):
    seed_everything(seed)
    images, targets = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    out = model(images, targets)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_group_of_one_task_at_weight_1_is_that_task_exactly(tiny_cfg):
    """The combination adds nothing of its own: the same loss and gradients, bit for bit."""
    cfg = tiny_cfg(aux="mae", img_size=8, patch_size=2)
    seed_everything(0)
    plain = build_model(cfg, num_classes=10, in_chans=1)
    seed_everything(0)
    grouped = build_model(cfg, num_classes=10, in_chans=1)
    grouped.aux = AuxGroup({"mae": grouped.aux}, [1.0], balance="none")
    a, ga = _one_step(plain)
    b, gb = _one_step(grouped)
    assert torch.equal(a.loss, b.loss)
    assert set(gb) == {n.replace("aux.", "aux.tasks.mae.", 1) for n in ga}
    assert all(torch.equal(g, gb[n.replace("aux.", "aux.tasks.mae.", 1)]) for n, g in ga.items())
    assert "tasks" not in "".join(plain.state_dict())  # one task: today's checkpoint keys


def test_several_tasks_weight_balance_and_probe_each(tiny_cfg):
    cfg = tiny_cfg(aux="mae+drloc", aux_weights="1,0.5", img_size=8, patch_size=2, balance="none")
    seed_everything(0)
    model = build_model(cfg, num_classes=10, in_chans=1)
    out, _ = _one_step(model)
    p = out.parts
    assert torch.allclose(p["loss_aux"], p["loss_aux_mae"] + 0.5 * p["loss_aux_drloc"])
    assert out.term_names == ("primary", "aux_mae", "aux_drloc") and len(out.terms) == 3
    assert torch.allclose(sum(out.terms), out.loss)
    # ema: each task's loss over its own running mean (its first value at the first step): each term = its weight
    ema = build_model(tiny_cfg(aux="mae+drloc", aux_weights="1,0.5", img_size=8, patch_size=2, balance="ema"),
                      num_classes=10, in_chans=1)
    out, _ = _one_step(ema)
    assert torch.allclose(out.parts["loss_aux"], torch.tensor(1.5))
    assert model.aux.options_read["aux_weights"] == "1,0.5" and "drloc_pairs" in model.aux.options_read


def test_every_task_of_a_group_gets_its_after_step(tiny_cfg):
    cfg = tiny_cfg(aux="mae+dino", img_size=8, patch_size=2, dino_out_dim=16)
    model = build_model(cfg, num_classes=10, in_chans=1)
    teacher = model.aux.tasks["dino"].teacher_encoder
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(1.0)
    model.after_step(0.5)
    assert any(not torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_views_are_the_most_any_task_asks(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--aux", "mae+simclr", "--per-class", "4", "--out", str(out)]) == 0
    cfg = (out / "config.yaml").read_text()
    assert "two_views: true" in cfg
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aux"] == "mae+simclr" and summary["aux_options"]["temperature"] == 0.5
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_aux_mae", "loss_aux_simclr"} <= set(row)


def test_drloc_trains_from_the_cli_and_records_its_options(tmp_path, tiny_flags):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--aux", "mae+drloc", "--aux-weights", "1,0.1", "--drloc-pairs", "8",
                 "--per-class", "4", "--grad-norm-every", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aux_options"]["drloc_pairs"] == 8 and summary["aux_options"]["aux_weights"] == "1,0.1"
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["loss_aux_drloc"] > 0 and row["grad_norm_aux_drloc"] > 0 and row["grad_norm_aux_mae"] > 0


@pytest.mark.parametrize("argv,message", [
    (["--aux", "mae+drloc", "--aux-weights", "1"], "--aux-weights 1 gives 1 weight(s) for 2 auxiliary task(s)"),
    (["--aux", "mae+nope"], "unknown auxiliary task 'nope' in --aux mae+nope"),
    (["--aux", "auto+drloc"], "'auto' stands alone"),
    (["--aux", "mae", "--aux-weights", "0.5"], "--aux mae is one task, whose weight is set by --lambda"),
    (["--aux", "mae+drloc", "--aux-weights", "1,x"], "give 2 comma-separated numbers"),
    (["--aux", "drloc", "--drloc-pairs", "0"], "--drloc-pairs must be at least 1, got 0"),
])
def test_bad_compositions_are_one_line(capsys, tmp_path, tiny_flags, argv, message):
    line = run_error(capsys, ["train", *tiny_flags, *argv, "--out", str(tmp_path / "x")])
    assert message in line


def test_a_grid_smaller_than_3x3_is_refused_in_one_line(tiny_cfg):
    from ssat.errors import UserError
    from ssat.models import build_backbone
    backbone = build_backbone("vit_test", img_size=4, patch_size=2, in_chans=1, num_classes=10)
    with pytest.raises(UserError, match="needs a final token map of at least 3x3; .* ends at 2x2"):
        build_aux("drloc", backbone, tiny_cfg())


# --- token maps from the classification pass ------------------------------------------------------------------

@pytest.mark.parametrize("model,size", [("vit_test", 8), ("slvit_tiny", 16), ("cvt_13", 32), ("swin_tiny", 32)])
def test_token_maps_come_from_the_classification_pass_itself(model, size, shallow_backbones):
    from ssat.models import build_backbone
    backbone = build_backbone(model, img_size=size, patch_size=2, in_chans=3, num_classes=5).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits, pooled, maps = backbone.forward_maps(x, (0, -1))
        assert torch.allclose(logits, backbone(x), atol=1e-6) and torch.allclose(pooled, backbone.embed(x), atol=1e-6)
    assert set(maps) == {0, -1} and all(m.dim() == 4 and m.shape[0] == 2 for m in maps.values())
    assert maps[-1].shape[1] == backbone.num_features


def test_drloc_spends_no_encoder_pass_of_its_own(tiny_cfg):
    calls = []
    for aux, passes in (("drloc", 1), ("mae+drloc", 2)):  # MAE's masked pass is its own; drloc reads the primary's
        model = build_model(tiny_cfg(aux=aux, img_size=8, patch_size=2), num_classes=10, in_chans=1)
        calls.clear()
        hook = model.backbone.encoder.patch_embed.register_forward_hook(lambda *_: calls.append(1))
        _one_step(model)
        hook.remove()
        assert len(calls) == passes, aux


# --- SL-ViT: Shifted Patch Tokenization and Locality Self-Attention -------------------------------------------

def test_spt_shifts_half_a_patch_along_each_diagonal_with_zero_borders():
    from ssat.models.slvit import ShiftedPatchTokenization, shift_copies
    x = torch.arange(1, 65, dtype=torch.float32).view(1, 1, 8, 8)  # pixel ids 1..64
    out = shift_copies(x, 2)
    assert out.shape == (1, 5, 8, 8) and torch.equal(out[0, 0], x[0, 0])
    at = lambda i, j: 0.0 if not (0 <= i < 8 and 0 <= j < 8) else float(x[0, 0, i, j])
    for c, (di, dj) in enumerate([(-2, -2), (-2, 2), (2, -2), (2, 2)], start=1):  # lu, ru, lb, rb
        want = torch.tensor([[at(i + di, j + dj) for j in range(8)] for i in range(8)])
        assert torch.equal(out[0, c], want), c
    spt = ShiftedPatchTokenization(img_size=8, patch_size=4, in_chans=3, embed_dim=7)
    assert spt.patches(torch.zeros(2, 3, 8, 8)).shape == (2, 4, 5 * 3 * 16)  # 5C channels, p² each
    assert spt(torch.zeros(2, 3, 8, 8)).shape == (2, 4, 7)


def test_no_visible_token_holds_a_masked_pixel_after_masking():
    from ssat.auxtasks.masking import random_masking
    from ssat.models import build_backbone
    backbone = build_backbone("slvit_tiny", img_size=16, patch_size=4, in_chans=1, num_classes=3)
    x = torch.arange(1, 257, dtype=torch.float32).view(1, 1, 16, 16).repeat(2, 1, 1, 1)  # ids, 0 = zero padding
    seen = []
    hook = backbone.encoder.patch_embed.norm.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    torch.manual_seed(0)
    masking = random_masking(2, backbone.num_patches, 0.75, x.device)
    backbone.forward_masked(x, masking.ids_keep)
    hook.remove()
    patch_of = x[0, 0].view(4, 4, 4, 4).permute(0, 2, 1, 3).reshape(16, 16)  # token -> its own pixel ids
    for b in range(2):
        masked = set(patch_of[masking.mask[b].bool()].flatten().tolist())
        visible = seen[0][b][masking.ids_keep[b]]  # the tokens that enter the encoder
        assert masked and not masked & set(visible.flatten().tolist())
        own = set(patch_of[masking.ids_keep[b]].flatten().tolist())
        assert own <= set(visible.flatten().tolist())  # each visible token keeps its own pixels


def test_lsa_with_two_tokens_attends_only_to_the_other_and_learns_its_temperature():
    from ssat.models.slvit import LocalitySelfAttention
    attn = LocalitySelfAttention(8, num_heads=2)
    with torch.no_grad():  # the output projection as the identity: _attend's output is the attended values
        attn.proj.weight.copy_(torch.eye(8))
        attn.proj.bias.zero_()
    assert torch.allclose(attn.temperature.detach(), torch.full((2,), 4 ** -0.5))  # d_head^-1/2
    q, k, v = (torch.randn(1, 2, 2, 4) for _ in range(3))  # (B, heads, tokens, d)
    out = attn._attend(q, k, v)
    other = v.flip(2).transpose(1, 2).reshape(1, 2, 8)  # each token gets exactly the other's value, per head
    assert torch.allclose(out, other, atol=1e-6)
    x = torch.randn(1, 5, 8)  # and for more tokens: no token attends to itself, whatever its scores
    attn(x).pow(2).sum().backward()
    assert attn.temperature.grad is not None and attn.temperature.grad.abs().sum() > 0


# --- locality guidance: a CNN teacher trained first on the same images ----------------------------------------

def test_the_teachers_stage_maps_at_32px():
    from ssat.models import build_backbone
    teacher = build_backbone("cifar_resnet56", img_size=32, patch_size=4, in_chans=3, num_classes=10)
    maps = teacher.forward_maps(torch.zeros(2, 3, 32, 32), (0, 1, 2))[2]
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert sum(p.numel() for p in teacher.parameters()) == pytest.approx(0.86e6, rel=0.02)  # ResNet-56's 0.85 M


def test_guidance_is_zero_when_the_maps_agree_and_never_trains_the_teacher():
    from ssat.auxtasks.guidance import GuidanceTask
    from ssat.auxtasks.registry import TokenMaps

    class Teacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward_maps(self, x, levels):
            return None, None, {i: self.w * x[:, :2].repeat(1, i + 1, 1, 1)[..., ::2 ** i, ::2 ** i]
                                for i in levels}

    task = GuidanceTask(Teacher(), 8, (0, -1), [2, 4], [2, 4])
    with torch.no_grad():
        for adapter in task.adapters:
            adapter.weight.copy_(torch.eye(adapter.weight.shape[0]).view_as(adapter.weight))
            adapter.bias.zero_()
    x = torch.randn(3, 2, 8, 8)
    agree = TokenMaps(x, {0: x, -1: x.repeat(1, 2, 1, 1)[..., ::2, ::2]})
    loss, _ = task.loss(None, x, maps=agree)
    assert float(loss.detach()) == 0.0
    other = TokenMaps(x, {0: x + 1, -1: agree.levels[-1]})
    loss, parts = task.loss(None, x, maps=other)
    assert float(loss.detach()) == pytest.approx(1.0) and "loss_guidance" in parts  # MSE of a shift by 1
    loss.backward()
    assert task.teacher.w.grad is None and not task.teacher.training
    task.train()
    assert not task.teacher.training  # frozen in eval mode, whatever mode the model is put in


def test_guidance_after_its_teacher_from_the_cli(tmp_path, tiny_flags, capsys):
    teacher = tmp_path / "teacher"
    common = [*tiny_flags, "--per-class", "4"]
    assert main(["train", *common, "--model", "cifar_resnet56", "--method", "scratch", "--img-size", "8",
                 "--out", str(teacher)]) == 0
    out = tmp_path / "student"
    assert main(["train", *common, "--aux", "mae+guidance", "--aux-weights", "1,2.5", "--guidance-teacher",
                 str(teacher), "--guidance-blocks", "0,1,1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aux_options"]["guidance_teacher"] == str(teacher)
    assert "per_class" not in summary["aux_options"]  # what the teacher is checked against is not its option
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss_aux_guidance"] > 0
    capsys.readouterr()
    line = run_error(capsys, ["train", *tiny_flags, "--per-class", "5", "--aux", "guidance", "--guidance-teacher",
                              str(teacher), "--guidance-blocks", "0,1,1", "--out", str(tmp_path / "leak")])
    assert "was trained on other data than this run (per_class 4 vs 5)" in line and "leak" in line
    line = run_error(capsys, ["train", *tiny_flags, "--aux", "guidance", "--out", str(tmp_path / "none")])
    assert "--aux guidance needs --guidance-teacher RUN" in line


def test_the_compose_digits_study_runs_its_teacher_then_its_arms(tmp_path):
    """configs/study/compose-digits*.yaml at one epoch on 2 images per class: the teacher sweep's folder is the one
    the guidance arms name, and teacher and students agree on their training images."""
    import yaml

    from ssat.commands.sweep import read_sweep
    root = __import__("pathlib").Path(__file__).parents[1] / "configs" / "study"
    quick = dict(epochs=1, warmup_epochs=0, per_class=3, device="cpu", val_fraction=0.34)
    for name, arms in (("compose-digits-teacher", None), ("compose-digits", ("vit-guidance-ssat", "cvt-ssat-drloc",
                                                                               "slvit-ssat"))):
        spec = read_sweep(str(root / f"{name}.yaml"))
        spec["base"].update(quick)
        spec["grid"]["seed"] = [0]
        spec["out"] = str(tmp_path / "runs")
        if arms:
            spec["arms"] = {a: {**spec["arms"][a]} for a in arms}
            for a in spec["arms"].values():
                if "guidance_teacher" in a:
                    a["guidance_teacher"] = str(tmp_path / a["guidance_teacher"])
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        assert main(["sweep", str(path)]) == 0
    done = sorted(p.parent.name for p in (tmp_path / "runs" / "compose-digits").glob("*/summary.json"))
    assert done == ["arm=cvt-ssat-drloc-seed=0", "arm=slvit-ssat-seed=0", "arm=vit-guidance-ssat-seed=0"]


def test_the_teachers_forward_counts_in_the_runs_cost(tmp_path, tiny_cfg):
    from conftest import make_teacher
    from ssat import cost
    teacher = make_teacher(tmp_path / "teacher", in_chans=1, classes=10, val_fraction=0.0)
    x, y = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    plain = build_model(tiny_cfg(method="scratch", img_size=8, patch_size=2), num_classes=10, in_chans=1)
    guided = build_model(tiny_cfg(aux="guidance", guidance_teacher=str(teacher), guidance_blocks="0,1,1", img_size=8,
                                  patch_size=2), num_classes=10, in_chans=1)
    teacher_gflops = cost.model_costs(build_model(tiny_cfg(model="cifar_resnet56", method="scratch", img_size=32,
                                                           patch_size=4), num_classes=10, in_chans=1),
                                      torch.randn(2, 1, 32, 32), y)["gflops_inference"]
    extra = cost.model_costs(guided, x, y)["gflops_train_step"] - cost.model_costs(plain, x, y)["gflops_train_step"]
    assert extra >= teacher_gflops > 0  # the teacher's forward at its own 32 px, on every training image
