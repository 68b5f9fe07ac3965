import copy

import pytest
import torch

from ssat.engine import Placement, Updates, build_optimizer, build_scheduler, topk_correct, train_one_epoch
from ssat.objective import build_model


def _lrs(epochs, warmup, per_epoch, base=1e-3, min_lr=1e-6):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=base)
    sched = build_scheduler(opt, epochs=epochs, warmup_epochs=warmup, updates_per_epoch=per_epoch, min_lr=min_lr)
    out = []
    for step in range(epochs * per_epoch):
        sched.step_update(step)
        out.append(opt.param_groups[0]["lr"])
    return out


def test_schedule_warms_up_linearly_then_cosines_down_to_min_lr():
    lrs = _lrs(epochs=20, warmup=5, per_epoch=10)
    assert lrs[0] == 0.0
    assert lrs[25] == pytest.approx(0.5e-3)  # halfway through warm-up
    assert lrs[50] == pytest.approx(1e-3)  # peak right after warm-up
    assert all(a >= b for a, b in zip(lrs[50:], lrs[51:]))  # then never increases
    # half-cycle cosine: halfway through the decay the lr is halfway between peak and min
    assert lrs[125] == pytest.approx((1e-3 + 1e-6) / 2, rel=1e-6)
    assert 1e-6 <= lrs[-1] < 1.2e-6  # the last update sits one step before the end of the cosine


def test_schedule_for_a_run_shorter_than_warmup_still_ramps():
    lrs = _lrs(epochs=2, warmup=5, per_epoch=3)
    assert lrs[0] == 0.0 and all(a < b for a, b in zip(lrs, lrs[1:]))


def test_topk_correct_caps_k_at_class_count():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    top1, top5 = topk_correct(logits, torch.tensor([1, 2]))
    assert top1.item() == 1 and top5.item() == 2  # with 3 classes, top-5 means top-3


class _Sched:
    def step_update(self, n):
        pass


def test_gradient_accumulation_equals_one_big_batch(tiny_cfg):
    cfg = tiny_cfg(method="scratch", img_size=8, patch_size=2, drop_path=0.0, label_smoothing=0.0)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    results = []
    for batches, accum in (([(x, y)], 1), ([(x[:4], y[:4]), (x[4:], y[4:])], 2)):
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=10, in_chans=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)  # linear in the gradient, unlike Adam
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        train_one_epoch(model, batches, Updates(opt, _Sched(), scaler, accum_steps=accum), 0,
                        place=Placement(torch.device("cpu")))
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_gradient_clipping_bounds_the_update(tiny_cfg):
    cfg = tiny_cfg(method="scratch", img_size=8, patch_size=2, drop_path=0.0)
    x, y = torch.randn(8, 1, 8, 8) * 100, torch.randint(0, 10, (8,))
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=10, in_chans=1)
    norms = []
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    original_step = opt.step

    def spy(*a, **k):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None])))
        return original_step(*a, **k)
    opt.step = spy
    train_one_epoch(model, [(x, y)], Updates(opt, _Sched(), torch.amp.GradScaler("cpu", enabled=False), clip_grad=0.01),
                    0, place=Placement(torch.device("cpu")))
    assert norms[0].item() == pytest.approx(0.01, rel=1e-3)


def test_the_optimizer_is_fused_adamw_with_the_plain_loops_updates(tiny_cfg):
    # The fused kernel is the CPU default too; it must update exactly as AdamW's loop does, weight decay skipped on
    # the same parameters.
    cfg = tiny_cfg(method="ssat", img_size=8, patch_size=2)
    torch.manual_seed(0)
    fused_model = build_model(cfg, num_classes=10, in_chans=1)
    plain_model = copy.deepcopy(fused_model)
    fused = build_optimizer(fused_model, 1e-2, 0.05, torch.device("cpu"))
    assert all(group["fused"] for group in fused.param_groups)
    params = dict(plain_model.named_parameters())
    plain = torch.optim.AdamW([{"params": [params[n] for n in names], "weight_decay": g["weight_decay"]}
                               for g, names in zip(fused.param_groups, _group_names(fused_model, fused))],
                              lr=1e-2, foreach=False)
    assert not any(group["fused"] for group in plain.param_groups)
    assert {g["weight_decay"] for g in fused.param_groups} == {0.0, 0.05}
    # Random gradients, not the model's: a key bias's true gradient is zero, so Adam would amplify the last bits
    # of its rounding noise into lr-sized differences.
    for model, opt in ((fused_model, fused), (plain_model, plain)):
        torch.manual_seed(1)
        for _ in range(3):
            for p in model.parameters():
                p.grad = torch.randn_like(p)
            opt.step()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _group_names(model, optimizer):
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
