"""The fast step: SDPA attention everywhere, visible tokens only in the masked stream, bf16 and torch.compile
giving the same numbers as the plain fp32 path."""

import json

import pytest
import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention

from ssat.auxtasks import AUX_TASKS
from ssat.cli import main
from ssat.config import Config, default_patch_size
from ssat.errors import UserError
from ssat.models import MODELS, input_shape, layers
from ssat.objective import build_model


def test_attention_equals_timms_and_a_written_out_softmax():
    torch.manual_seed(0)
    ours, theirs = layers.Attention(32, num_heads=4, qkv_bias=True), TimmAttention(32, num_heads=4, qkv_bias=True)
    theirs.load_state_dict(ours.state_dict())  # same parameter names: weights load into plain timm models
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(ours(x), theirs(x))
    q, k, v = torch.randn(3, 2, 3, 5, 8).unbind(0)
    written_out = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, dim=-1) @ v
    torch.testing.assert_close(layers.attention(q, k, v), written_out)


def test_cpu_autocast_keeps_the_attention_core_in_fp32():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 9, 16).unbind(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layers.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    exact = F.scaled_dot_product_attention(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float())
    torch.testing.assert_close(out.float(), exact, atol=1e-2, rtol=0)  # only the output's rounding to bf16


def test_attention_projections_follow_cpu_autocast():
    # Only the core is upcast (above); qkv and proj are bf16 matmuls like the MLPs. An fp32 module cost about a
    # third of the bf16 step at 32 px, and the digits stalls it was meant to stop came from a too-short warm-up.
    torch.manual_seed(0)
    attn = layers.Attention(32, num_heads=4, qkv_bias=True)
    x = torch.randn(3, 7, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = attn(x)
    assert mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), attn(x), atol=3e-2, rtol=0)


def test_every_attention_of_encoder_and_decoder_goes_through_sdpa(tiny_cfg, monkeypatch):
    model = build_model(tiny_cfg(img_size=8, patch_size=2), num_classes=10, in_chans=1)
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(layers.F, "scaled_dot_product_attention",
                        lambda q, *a, **kw: calls.append(tuple(q.shape)) or real(q, *a, **kw))
    model(torch.randn(4, 1, 8, 8), torch.arange(4))
    depth, decoder_depth = len(model.backbone.encoder.blocks), len(model.aux.decoder.blocks)
    assert len(calls) == 2 * depth + decoder_depth  # primary + masked encoder passes, decoder
    # Queries: the masked stream's class token + 4 visible patches of 16; the decoder's last block, the 12 masked
    # patches it predicts; the others all 17 tokens.
    assert sorted({c[2] for c in calls}) == [1 + 4, 12, 1 + 16]


def test_masked_stream_feeds_only_visible_tokens_to_the_blocks(tiny_cfg):
    model = build_model(tiny_cfg(mask_ratio=0.75, img_size=8, patch_size=2), num_classes=10, in_chans=1)
    seen = []
    model.backbone.encoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    model.aux.loss(model.backbone, torch.randn(2, 1, 8, 8))
    assert seen == [1 + 4]


def _loss_and_grads(model, x, y, dtype):
    torch.manual_seed(123)  # the same masks for both precisions
    model.zero_grad()
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        loss = model(x, y).loss
    loss.backward()
    return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_bf16_fast_path_matches_fp32_plain_path(tiny_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(drop_path=0.0, img_size=8, patch_size=2), num_classes=10, in_chans=1)
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    loss32, grad32 = _loss_and_grads(model, x, y, None)
    loss16, grad16 = _loss_and_grads(model, x, y, torch.bfloat16)
    assert loss16 == pytest.approx(loss32, rel=1e-2)  # stated tolerance: 1 % on the loss
    assert F.cosine_similarity(grad16, grad32, dim=0) > 0.99  # and the same descent direction


@pytest.mark.slow
def test_compile_flag_trains_to_the_same_numbers(tmp_path, tiny_flags):
    rows = {}
    # reduce-overhead adds CUDA graphs on a GPU; on a CPU it must fall back to plain compilation, not fail
    for name, extra in (("eager", []), ("compiled", ["--compile"]),
                        ("graphs", ["--compile", "--compile-mode", "reduce-overhead"])):
        out = tmp_path / name
        assert main(["train", *tiny_flags, "--fraction", "0.1", "--drop-path", "0", "--out", str(out), *extra]) == 0
        rows[name] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
        assert json.loads((out / "summary.json").read_text())["compiled"] == (name != "eager")
        assert ("compile_mode: reduce-overhead" in (out / "config.yaml").read_text()) == (name == "graphs")
    for name in ("compiled", "graphs"):
        assert rows[name]["loss"] == pytest.approx(rows["eager"]["loss"], rel=1e-4)
        assert rows[name]["test_acc1"] == pytest.approx(rows["eager"]["test_acc1"], abs=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_backbones_ssat_step_traces_as_one_graph(name, shallow_backbones):
    # No graph break, no data-dependent shape, no host read-out anywhere in the step's forward (masking,
    # gathers, decoder, loss weighting), for every auxiliary task the backbone takes (a scratch-only baseline: its
    # scratch step): torch.compile and CUDA graphs then cover the whole step instead of falling back to Python.
    spec = MODELS[name]
    frames = 4 if spec.capabilities.video else 0
    steps = [("ssat", aux) for aux in sorted(AUX_TASKS)] if spec.capabilities.auxiliary else [("scratch", "auto")]
    traced = 0
    for method, aux in steps:
        try:
            cfg = Config.from_dict({"model": name, "method": method, "aux": aux, "img_size": 32,
                                    "patch_size": default_patch_size(32, name), "decoder_dim": 16,
                                    "decoder_depth": 1, "decoder_heads": 2, "dino_out_dim": 32,
                                    "drop_path": 0.1}).validate()
            model = build_model(cfg, num_classes=3, in_chans=3, frames=frames)
        except UserError:
            continue  # a combination the backbone refuses (tests/test_contract.py)
        x, y = torch.randn(4, *input_shape(3, 32, frames)), torch.tensor([0, 1, 2, 0])
        other = x.flip(-1) if (aux in AUX_TASKS and AUX_TASKS[aux].views == 2) else None
        torch._dynamo.reset()
        explained = torch._dynamo.explain(lambda a, b, model=model, other=other: model(a, b, other).loss)(x, y)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), (aux, explained.break_reasons)
        traced += 1
    assert traced >= 1, f"no step of {name} was traced"


def test_patch_embedding_stays_fp32_under_autocast(tiny_cfg):
    model = build_model(tiny_cfg(img_size=8, patch_size=2), num_classes=10, in_chans=1)
    embed = model.backbone.encoder.patch_embed
    x = torch.randn(3, 1, 8, 8)
    exact = embed(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = embed(x)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, exact)
    assert {"patch_embed.proj.weight", "patch_embed.proj.bias"} <= set(model.backbone.encoder.state_dict())
