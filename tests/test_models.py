import pytest
import timm
import torch

from ssat.engine import build_optimizer
from ssat.models import build_backbone
from ssat.objective import build_model


@pytest.mark.parametrize("name,dim,depth,heads,mlp", [("vit_tiny", 192, 12, 3, 768), ("vit_small", 384, 12, 6, 1536),
                                                      ("vit_base", 768, 12, 12, 3072), ("vit_mini", 128, 6, 4, 256)])
def test_registered_vits_have_the_papers_sizes(name, dim, depth, heads, mlp):
    enc = build_backbone(name, img_size=32, patch_size=4, in_chans=3, num_classes=10).encoder
    assert (enc.embed_dim, len(enc.blocks), enc.blocks[0].attn.num_heads) == (dim, depth, heads)
    assert enc.blocks[0].mlp.fc1.out_features == mlp
    assert enc.patch_embed.grid_size == (8, 8)


def test_sincos_position_embedding_is_fixed_and_learned_one_trains():
    fixed = build_backbone("vit_test", img_size=8, patch_size=2, in_chans=1, num_classes=10)
    assert not fixed.encoder.pos_embed.requires_grad
    assert torch.count_nonzero(fixed.encoder.pos_embed[0, 0]) == 0  # class token position is zero
    assert torch.unique(fixed.encoder.pos_embed[0, 1:], dim=0).shape[0] == 16  # each patch its own position
    learned = build_backbone("vit_test", img_size=8, patch_size=2, in_chans=1, num_classes=10,
                             pos_embed="learned")
    assert learned.encoder.pos_embed.requires_grad


def test_global_pool_option_changes_the_classifier_input():
    token = build_backbone("vit_test", img_size=8, patch_size=2, in_chans=1, num_classes=10).eval()
    avg = build_backbone("vit_test", img_size=8, patch_size=2, in_chans=1, num_classes=10, global_pool="avg").eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        # 'token': the head reads the class token; 'avg': the (fc-normed) mean of the patch tokens
        assert torch.allclose(token(x), token.encoder.head(token.forward_features(x)[:, 0]), atol=1e-6)
        pooled = avg.encoder.fc_norm(avg.forward_features(x)[:, 1:].mean(dim=1))
        assert torch.allclose(avg(x), avg.encoder.head(pooled), atol=1e-6)


def test_weight_decay_skips_norms_biases_tokens_and_position_embeddings(tiny_cfg):
    model = build_model(tiny_cfg(img_size=8, patch_size=2, pos_embed="learned"), num_classes=10, in_chans=1)
    optimizer = build_optimizer(model, 1e-3, 0.05, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    undecayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, 0.05}
    assert {"backbone.encoder.cls_token", "backbone.encoder.pos_embed", "aux.decoder.mask_token",
            "backbone.encoder.norm.weight", "backbone.encoder.blocks.0.attn.qkv.bias"} <= undecayed
    assert all(n.endswith("weight") and "norm" not in n for n in decayed)
    assert "backbone.encoder.blocks.0.attn.qkv.weight" in decayed


def test_encoder_weights_load_into_plain_timm():
    ours = build_backbone("vit_tiny", img_size=32, patch_size=4, in_chans=3, num_classes=10).eval()
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False, **ours.timm_kwargs).eval()
    plain.load_state_dict(ours.encoder.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(plain(x), ours(x))
