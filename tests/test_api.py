"""The public Python API: the README's example runs as written on a plain timm ViT, and the wrapper serves every
timm ViT layout MAE has to handle."""

import re
from pathlib import Path

import pytest
import timm
import torch

import ssat

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README.md lost its API example (between <!-- api-example --> markers)"
    return block.group(1)


def test_the_readme_example_runs_and_both_losses_fall():
    torch.manual_seed(0)
    images, targets = torch.randn(4, 3, 32, 32), torch.arange(4)
    scope = {"loader": [(images, targets)] * 12}
    exec(compile(readme_example(), "README.md", "exec"), scope)
    history = scope["history"]
    for part in ("loss_primary", "loss_aux"):
        first = sum(h[part] for h in history[:3]) / 3
        last = sum(h[part] for h in history[-3:]) / 3
        assert last < first, (part, first, last)
    assert scope["predictions"].shape == (4,)


@pytest.mark.parametrize("layout", [dict(), dict(class_token=False, global_pool="avg"), dict(reg_tokens=2),
                                    dict(no_embed_class=True), dict(dynamic_img_size=True)])
def test_masked_pass_sees_only_the_visible_patches_of_any_timm_vit(layout):
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=16, patch_size=4, embed_dim=32, depth=2,
                            num_heads=2, **layout).eval()
    backbone = ssat.TimmViT(vit)
    x = torch.randn(2, 3, 16, 16)
    masking = ssat.random_masking(2, backbone.num_patches, 0.75)
    latent = backbone.forward_masked(x, masking.ids_keep)
    assert latent.shape == (2, 1 + 4, 32)
    # Changing the pixels of masked patches changes nothing: they never enter the encoder.
    patches = ssat.patchify(x, 4)
    noise = torch.randn_like(patches)
    keep = torch.zeros(2, 16, dtype=torch.bool).scatter_(1, masking.ids_keep, True)
    changed = ssat.unpatchify(torch.where(keep[..., None], patches, noise), 4, (4, 4), 3)
    assert torch.allclose(backbone.forward_masked(changed, masking.ids_keep), latent, atol=1e-6)
    model = ssat.SSAT(vit, aux="mae", lam=0.1, balance="none", decoder_dim=16, decoder_heads=2, decoder_depth=1)
    out = model.train()(x, torch.tensor([0, 2]))
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 3)


def test_wrong_inputs_are_one_line_errors():
    with pytest.raises(ssat.UserError, match="wraps a timm VisionTransformer, got ResNet"):
        ssat.SSAT(timm.create_model("resnet18", num_classes=2))
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=2, img_size=16, patch_size=4, depth=1)
    with pytest.raises(ssat.UserError, match="--mask-ratio must be in"):
        ssat.SSAT(vit, mask_ratio=1.5)
    with pytest.raises(ssat.UserError, match="unknown option"):
        ssat.SSAT(vit, mask_ratoi=0.5)
    assert issubclass(ssat.UserError, ValueError)


def test_the_accelerate_example_runs():
    pytest.importorskip("accelerate")
    text = (README.parent / "docs" / "api.md").read_text()
    code = re.search(r"<!-- accelerate-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    import accelerate
    losses = []
    real = accelerate.Accelerator.backward

    def recording(self, loss, **kw):  # what the example trains on, step by step
        losses.append(loss.item())
        return real(self, loss, **kw)
    torch.manual_seed(0)
    images, targets = torch.randn(8, 3, 32, 32), torch.arange(8) % 10
    data = torch.utils.data.TensorDataset(images.repeat(12, 1, 1, 1), targets.repeat(12))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accelerate.Accelerator, "backward", recording)
        exec(compile(code, "docs/api.md", "exec"), {"loader": torch.utils.data.DataLoader(data, batch_size=8)})
    assert len(losses) == 12 and all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-3:]) < sum(losses[:3]), losses  # it trains: the loss falls


def test_ssat_train_from_python_writes_a_run(tmp_path):
    summary = ssat.train(ssat.config(dataset="digits", model="vit_mini", per_class=4, epochs=1, batch_size=16,
                                     energy=False, quiet=True, device="cpu", out=str(tmp_path / "run")))
    assert summary["method"] == "ssat" and (tmp_path / "run" / "summary.json").exists()


def _vit(**kw):
    return timm.create_model("vit_tiny_patch16_224", **{"num_classes": 3, "img_size": 16, "patch_size": 4,
                                                        "embed_dim": 32, "depth": 2, "num_heads": 2, **kw})


def test_what_the_api_cannot_honour_is_refused_not_ignored():
    with pytest.raises(ssat.UserError, match=r"no classification head \(num_classes=0\)"):
        ssat.SSAT(_vit(num_classes=0))
    with pytest.raises(ssat.UserError, match="img_size 30x30 is not a multiple of patch_size 4"):
        ssat.SSAT(_vit(img_size=30))
    with pytest.raises(ssat.UserError, match="temperature do\\(es\\) not apply to the auxiliary task 'mae'"):
        ssat.SSAT(_vit(), aux="mae", temperature=0.5)
    with pytest.raises(ssat.UserError, match="epochs do\\(es\\) not apply"):
        ssat.SSAT(_vit(), aux="mae", epochs=3)
    model = ssat.SSAT(_vit(), aux="simclr", temperature=0.5)  # its own option is taken
    assert model.aux.temperature == 0.5
    for bad in (float("nan"), -0.1, 1.5, "half"):
        with pytest.raises(ssat.UserError, match="progress must be a number in \\[0, 1\\]"):
            model.set_progress(bad)
    with pytest.raises(ssat.UserError, match="takes a Config"):
        ssat.train(["epochs", 1])


def test_predict_is_in_eval_mode_and_leaves_the_mode_as_it_was():
    torch.manual_seed(0)
    model = ssat.SSAT(_vit(drop_path_rate=0.5), aux="mae", decoder_dim=16, decoder_heads=2, decoder_depth=1)
    x = torch.randn(2, 3, 16, 16)
    model.train()
    first, second = model.predict(x), model.predict(x)
    assert torch.equal(first, second) and model.training and model.backbone.training  # no drop-path, mode kept
    model.eval()
    assert torch.allclose(model.predict(x), first)


def test_train_takes_a_dict_of_options(tmp_path):
    import tiny_model  # noqa: F401 (imported to register vit_test)
    from conftest import TINY
    summary = ssat.train({**TINY, "fraction": 0.05, "out": str(tmp_path / "run")})
    assert summary["epochs"] == 1 and (tmp_path / "run" / "summary.json").is_file()
