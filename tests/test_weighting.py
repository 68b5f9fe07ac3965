"""Loss weighting: λ schedules, the adaptive balances on constant losses, and the gradient-norm probe."""

import math

import pytest
import torch

from ssat import engine
from ssat.objective import LossWeighting, build_model, lambda_at


@pytest.mark.parametrize("schedule,progress,expected", [
    ("constant", 0.0, 0.1), ("constant", 0.7, 0.1), ("constant", 1.0, 0.1),
    ("linear", 0.0, 0.1), ("linear", 0.25, 0.3), ("linear", 0.5, 0.5), ("linear", 1.0, 0.9),
    ("cosine", 0.0, 0.1), ("cosine", 0.5, 0.5), ("cosine", 1.0, 0.9),
    ("cosine", 0.25, 0.9 + (0.1 - 0.9) * 0.5 * (1 + math.cos(math.pi / 4))),
    ("linear", 1.7, 0.9), ("linear", -1.0, 0.1),   # clipped to the run
])
def test_lambda_schedule_values(schedule, progress, expected):
    assert lambda_at(progress, 0.1, 0.9, schedule) == pytest.approx(expected)


def test_scheduled_weights_follow_progress_and_sum_to_one():
    w = LossWeighting(0.2, 0.8, "linear")
    lp, la = torch.tensor(2.0), torch.tensor(0.5)
    for progress, lam in ((0.0, 0.2), (0.5, 0.5), (1.0, 0.8)):
        w.set_progress(progress)
        term_p, term_a, wp, wa = w(lp, la)
        assert wp.item() == pytest.approx(lam) and wa.item() == pytest.approx(1 - lam)
        assert term_p.item() == pytest.approx(lam * 2.0) and term_a.item() == pytest.approx((1 - lam) * 0.5)


def test_ema_balance_on_constant_losses_gives_the_documented_weights():
    lam, lp, la = 0.3, 2.5, 0.04
    w = LossWeighting(lam, balance="ema").train()
    for _ in range(5):
        _, _, wp, wa = w(torch.tensor(lp), torch.tensor(la))
    # Running means equal the constant losses from the first step on: w ∝ (λ / L_p, (1 − λ) / L_a), summing to 1.
    expect_p = (lam / lp) / (lam / lp + (1 - lam) / la)
    assert wp.item() == pytest.approx(expect_p) and wa.item() == pytest.approx(1 - expect_p)
    assert torch.allclose(w.running, torch.tensor([lp, la]))


def test_ema_balance_tracks_a_moving_loss_and_freezes_in_eval_mode():
    w = LossWeighting(0.5, balance="ema", ema_momentum=0.9).train()
    w(torch.tensor(1.0), torch.tensor(1.0))
    w(torch.tensor(2.0), torch.tensor(1.0))
    assert w.running[0].item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    w.eval()
    w(torch.tensor(100.0), torch.tensor(1.0))
    assert w.running[0].item() == pytest.approx(1.1)


def test_uncertainty_balance_optimum_on_constant_losses():
    """Minimising Σ λ_i e^(−s_i) L_i + s_i over s gives e^(s_i) = λ_i L_i: effective weights 1 / L_i."""
    lam, lp, la = 0.1, 2.0, 0.25
    w = LossWeighting(lam, balance="uncertainty")
    opt = torch.optim.Adam(w.parameters(), lr=0.05)
    for _ in range(2000):
        term_p, term_a, _, _ = w(torch.tensor(lp), torch.tensor(la))
        opt.zero_grad()
        (term_p + term_a).backward()
        opt.step()
    _, _, wp, wa = w(torch.tensor(lp), torch.tensor(la))
    assert wp.item() == pytest.approx(1 / lp, rel=1e-3) and wa.item() == pytest.approx(1 / la, rel=1e-3)


def test_uncertainty_log_variances_are_clamped():
    w = LossWeighting(0.5, balance="uncertainty", clamp=2.0)
    with torch.no_grad():
        w.log_vars.fill_(50.0)
    _, _, wp, _ = w(torch.tensor(1.0), torch.tensor(1.0))
    assert wp.item() == pytest.approx(0.5 * math.exp(-2.0))  # a loss is never switched off


def test_model_loss_is_the_weighted_sum_with_a_schedule(tiny_cfg):
    cfg = tiny_cfg(img_size=8, patch_size=2, drop_path=0.0, lam=0.2, lambda_schedule="linear", lambda_end=0.6)
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=10, in_chans=1)
    model.set_progress(0.5)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    out = model(x, y)
    lp, la = out.parts["loss_primary"].item(), out.parts["loss_aux"].item()
    assert out.parts["w_primary"].item() == pytest.approx(0.4)
    assert out.loss.item() == pytest.approx(0.4 * lp + 0.6 * la, rel=1e-6)
    assert sum(out.terms).item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_split_backward_gives_the_same_gradient_and_each_terms_norm(tiny_cfg):
    cfg = tiny_cfg(img_size=8, patch_size=2, drop_path=0.0, lam=0.3)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))

    def fresh():
        torch.manual_seed(0)
        model = build_model(cfg, num_classes=10, in_chans=1)
        torch.manual_seed(1)  # the same mask in both passes
        return model, model(x, y)

    model, out = fresh()
    params = model.shared_parameters()
    primary = torch.autograd.grad(out.terms[0], params, retain_graph=True, allow_unused=True)
    aux = torch.autograd.grad(out.terms[1], params, retain_graph=True, allow_unused=True)
    out.loss.backward()
    whole = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model, out = fresh()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = engine.split_backward(out.terms, model.shared_parameters(), scaler, divide=1)
    split = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert split.keys() == whole.keys()
    assert all(torch.allclose(split[n], whole[n], atol=1e-6) for n in whole)
    flat = lambda gs: torch.cat([g.flatten() for g in gs if g is not None])
    assert stats[0].item() == pytest.approx(flat(primary).norm().item(), rel=1e-4)
    assert stats[1].item() == pytest.approx(flat(aux).norm().item(), rel=1e-4)
    assert stats[2].item() == pytest.approx(torch.nn.functional.cosine_similarity(
        flat(primary), flat(aux), dim=0).item(), abs=1e-4)
    head = model.backbone.encoder.head.weight
    assert all(p is not head for p in model.shared_parameters())  # the head gets only the primary loss
