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

