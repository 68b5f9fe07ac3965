import pytest
import torch

from ssat.objective import build_model


def _batch(in_chans=1, size=8, n=4, classes=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, in_chans, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def _model(tiny_cfg, **kw):
    cfg = tiny_cfg(img_size=8, patch_size=2, drop_path=0.0, **kw)
    torch.manual_seed(0)
    return build_model(cfg, num_classes=10, in_chans=1)


@pytest.mark.parametrize("lam", [0.0, 1.0, 0.1, 0.5])
def test_total_loss_is_lambda_weighted_sum(tiny_cfg, lam):
    model = _model(tiny_cfg, lam=lam)
    x, y = _batch()
    torch.manual_seed(1)
    out = model(x, y)
    primary, aux = out.parts["loss_primary"], out.parts["loss_aux"]
    if lam == 1.0:
        assert torch.equal(out.loss.detach(), primary)  # exactly the primary loss
    elif lam == 0.0:
        assert torch.equal(out.loss.detach(), aux)  # exactly the auxiliary loss
    else:
        assert out.loss.item() == pytest.approx(lam * primary.item() + (1 - lam) * aux.item(), rel=1e-6)


def test_scratch_builds_no_decoder_and_loss_is_primary(tiny_cfg):
    model = _model(tiny_cfg, method="scratch", lam=0.3)
    assert model.aux is None
    assert not any("decoder" in name for name, _ in model.named_parameters())
    x, y = _batch()
    out = model(x, y)
    assert set(out.parts) == {"loss_primary"}
    assert torch.equal(out.loss.detach(), out.parts["loss_primary"])


def test_aux_loss_trains_decoder_and_encoder_but_not_head(tiny_cfg):
    model = _model(tiny_cfg)
    x, _ = _batch()
    loss, _ = model.aux.loss(model.backbone, x)
    loss.backward()
    enc = model.backbone.encoder
    for name, p in list(model.aux.named_parameters()) + [("patch_embed", enc.patch_embed.proj.weight),
                                                          ("block0.qkv", enc.blocks[0].attn.qkv.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert enc.head.weight.grad is None  # the reconstruction never touches the classifier


def test_primary_and_aux_share_one_encoder(tiny_cfg):
    model = _model(tiny_cfg)
    x, y = _batch()
    model(x, y).loss.backward()
    enc_params = {id(p) for p in model.backbone.parameters()}
    assert not any(id(p) in enc_params for p in model.aux.parameters())  # aux owns only its decoder
    assert model.backbone.encoder.head.weight.grad.abs().sum() > 0


def test_masked_forward_with_all_patches_in_order_equals_full_forward(tiny_cfg):
    model = _model(tiny_cfg).eval()
    x, _ = _batch()
    ids_all = torch.arange(16).expand(4, -1)
    with torch.no_grad():
        assert torch.allclose(model.backbone.forward_masked(x, ids_all), model.backbone.forward_features(x),
                              atol=1e-5)


def test_masked_stream_encodes_only_visible_patches(tiny_cfg):
    model = _model(tiny_cfg, mask_ratio=0.75)
    seen = []
    handle = model.backbone.encoder.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[1]))
    x, _ = _batch()
    model.aux.loss(model.backbone, x)
    handle.remove()
    assert seen == [1 + 4]  # class token + 25% of 16 patches


def test_predict_uses_primary_stream_only(tiny_cfg, monkeypatch):
    model = _model(tiny_cfg).eval()
    monkeypatch.setattr(model.aux, "loss", lambda *a: pytest.fail("aux stream ran at inference"))
    x, _ = _batch()
    assert torch.equal(model.predict(x), model.backbone(x))


def test_second_view_goes_to_the_auxiliary_stream(tiny_cfg):
    model = _model(tiny_cfg)
    received = []
    original = model.aux.loss
    model.aux.loss = lambda backbone, images, other, features=None: (received.append((images, other)),
                                                                    original(backbone, images, other))[1]
    x, y = _batch()
    view2 = x.flip(-1)
    model(x, y, view2)
    assert received[0][0] is view2 and received[0][1] is x  # contrastive tasks compare it to the primary view
    model(x, y)
    assert received[1][0] is x and received[1][1] is None  # one view: both streams see the same augmented image


def test_no_weight_decay_covers_tokens_and_position_embeddings(tiny_cfg):
    model = _model(tiny_cfg, pos_embed="learned")
    assert {"backbone.encoder.cls_token", "backbone.encoder.pos_embed", "aux.decoder.mask_token"} \
        <= model.no_weight_decay()



@pytest.mark.parametrize("qk_norm", [False, True])
def test_block_at_some_rows_equals_full_block_gathered(qk_norm):
    from functools import partial

    from timm.models.vision_transformer import Block

    from ssat.models.layers import Attention, block_rows, gather_tokens
    torch.manual_seed(0)
    block = Block(16, 4, qkv_bias=True, qk_norm=qk_norm, attn_layer=Attention,
                  norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    x = torch.randn(3, 9, 16, requires_grad=True)
    rows = torch.stack([torch.randperm(9)[:5] for _ in range(3)])  # each sample its own rows, any order
    full = gather_tokens(block(x), rows)
    part = block_rows(block, x, rows)
    assert part.shape == (3, 5, 16)
    assert torch.allclose(part, full, atol=1e-6)
    g = torch.randn_like(full)
    grads_full = torch.autograd.grad(full, [x, *block.parameters()], g)
    grads_part = torch.autograd.grad(part, [x, *block.parameters()], g)
    for a, b in zip(grads_full, grads_part):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("norm_pix", [False, True])
def test_mae_loss_predicting_masked_patches_only_equals_full_prediction_masked(tiny_cfg, norm_pix):
    from ssat.auxtasks.masking import masked_mse, patchify, random_masking
    model = _model(tiny_cfg, norm_pix_loss=norm_pix)
    task, backbone = model.aux, model.backbone
    x, _ = _batch()
    torch.manual_seed(3)
    loss, _ = task.loss(backbone, x)
    torch.manual_seed(3)  # the same masks and the same draws inside the encoder
    masking = random_masking(x.shape[0], backbone.num_patches, task.mask_ratio)
    pred_all = task.decoder(backbone.forward_masked(x, masking.ids_keep), masking.ids_restore)
    assert pred_all.shape == (4, 16, 4)
    expected = masked_mse(pred_all, patchify(x, backbone.patch_size), masking.mask, norm_pix)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # and the gradients reaching the encoder and decoder agree
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads_expected = torch.autograd.grad(expected, params, allow_unused=True)
    for p, a, b in zip(params, grads, grads_expected):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-6), [n for n, q in model.named_parameters() if q is p]


def test_masking_lists_the_masked_patches():
    from ssat.auxtasks.masking import random_masking
    torch.manual_seed(0)
    masking = random_masking(5, 16, 0.75)
    assert masking.ids_masked.shape == (5, 12)
    assert torch.all(masking.mask.gather(1, masking.ids_masked) == 1)
    both = torch.cat([masking.ids_keep, masking.ids_masked], dim=1).sort(dim=1).values
    assert torch.equal(both, torch.arange(16).expand(5, -1))
