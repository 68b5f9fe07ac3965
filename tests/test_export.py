"""`ssat export`: what a timm user of the folder gets must be what `ssat predict` computes (preprocessing included),
and a damaged, tampered or untrained model is refused in one line instead of being exported."""

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import run_error
from ssat.cli import main
from ssat.inference import predict


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny digits runs at 8 px (no crop), 32 px (pad-crop) and 64 px (rrc: evaluated at crop fraction 0.875)."""
    import tiny_model  # noqa: F401 (imported to register vit_test)
    from conftest import TINY, as_flags
    root = tmp_path_factory.mktemp("export")
    made = {}
    for size, patch in ((8, 2), (32, 4), (64, 8)):
        out = root / f"r{size}"
        assert main(["train", *as_flags(TINY), "--fraction", "0.05", "--img-size", str(size), "--patch-size",
                     str(patch), "--out", str(out)]) == 0
        made[size] = out
    return made


def _image(path, seed=0):
    """A non-square grayscale picture, so that resize and centre crop both matter."""
    pixels = np.random.default_rng(seed).integers(0, 256, (29, 41), dtype=np.uint8)
    Image.fromarray(pixels).resize((82, 58), Image.NEAREST).save(path)
    return path


@pytest.mark.parametrize("size", [8, 32, 64])
def test_timm_with_the_exported_data_config_gives_predicts_probabilities(tmp_path, runs, size, capsys):
    to = tmp_path / "export"
    assert main(["export", str(runs[size]), "--to", str(to)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["crop_pct"] == (0.875 if size == 64 else 1.0)
    image = _image(tmp_path / "x.png")
    ours = predict(str(runs[size]), [str(image)], topk=10, device="cpu")[0]["top"]
    model = timm.create_model(f"local-dir:{to}", pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    with torch.no_grad():
        theirs = model(transform(Image.open(image).convert("L"))[None]).softmax(dim=1)[0]
    for entry in ours:
        assert theirs[entry["index"]].item() == pytest.approx(entry["prob"], abs=1e-4), entry


def _with(path, out, tensors=None, **meta_changes):
    """A copy of a model.safetensors with its tensors and/or metadata entries replaced."""
    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    for key, change in meta_changes.items():
        metadata[key] = json.dumps(change(json.loads(metadata[key])))
    save_file(tensors if tensors is not None else load_file(str(path)), str(out), metadata=metadata)
    return out


def test_non_finite_weights_are_refused_like_eval_and_predict_refuse_them(tmp_path, runs, capsys):
    tensors = load_file(str(runs[8] / "model.safetensors"))
    for value in (float("nan"), float("inf")):
        bad = {k: v.clone() for k, v in tensors.items()}
        bad["head.weight"][0, 0] = value
        path = _with(runs[8] / "model.safetensors", tmp_path / "nan.safetensors", bad)
        for argv in (["export", str(path), "--to", str(tmp_path / "x")], ["eval", "--checkpoint", str(path)]):
            assert "holds non-finite weights (head.weight)" in run_error(capsys, argv)
        assert not (tmp_path / "x").exists()


def test_an_export_whose_reload_gives_non_finite_logits_is_refused(tmp_path, runs, capsys, monkeypatch):
    real = timm.models.save_for_hf

    def corrupting(model, folder, **kw):  # as if the disk or timm damaged what it wrote
        real(model, folder, **kw)
        tensors = load_file(f"{folder}/model.safetensors")
        tensors["head.bias"][:] = float("nan")
        save_file(tensors, f"{folder}/model.safetensors")
    monkeypatch.setattr(timm.models, "save_for_hf", corrupting)
    line = run_error(capsys, ["export", str(runs[8]), "--to", str(tmp_path / "x")])
    assert "does not reproduce the model's logits (max difference nan)" in line


@pytest.mark.parametrize("tamper,message", [
    (lambda t: {**t, "head.weight": t["head.weight"][:5]}, "does not fit model vit_test"),
    (lambda t: {k: v for k, v in t.items() if k != "norm.bias"}, "does not fit model vit_test"),
    (lambda t: {**t, "extra.weight": torch.zeros(3)}, "does not fit model vit_test"),
])
def test_weights_of_the_wrong_shape_or_keys_are_one_line(tmp_path, runs, capsys, tamper, message):
    tensors = load_file(str(runs[8] / "model.safetensors"))
    path = _with(runs[8] / "model.safetensors", tmp_path / "t.safetensors", tamper(tensors))
    assert message in run_error(capsys, ["export", str(path), "--to", str(tmp_path / "x")])


def test_edited_timm_metadata_never_reaches_timm(tmp_path, runs, capsys, monkeypatch):
    victim = tmp_path / "elsewhere.pth"
    torch.save({"x": torch.zeros(1)}, victim)
    seen = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: seen.append(k) or real(*a, **k))
    for change in (lambda t: {**t, "checkpoint_path": str(victim)}, lambda t: {**t, "name": "resnet18"},
                   lambda t: {**t, "num_classes": 3}):
        path = _with(runs[8] / "model.safetensors", tmp_path / "m.safetensors", timm=change)
        line = run_error(capsys, ["export", str(path), "--to", str(tmp_path / "x")])
        assert "its 'timm' metadata differs from what ssat writes" in line
    assert not any("checkpoint_path" in k for k in seen) and not (tmp_path / "x").exists()


def test_an_unwritable_target_and_a_pretrain_run_are_one_line(tmp_path, runs, capsys, tiny_flags):
    (tmp_path / "file").write_text("x")
    assert "is not an empty folder" in run_error(capsys, ["export", str(runs[8]), "--to", str(tmp_path / "file")])
    line = run_error(capsys, ["export", str(runs[8]), "--to", str(tmp_path / "file" / "sub")])
    assert line.startswith(f"ssat: error: --to {tmp_path / 'file' / 'sub'}: cannot write the export")
    pre = tmp_path / "pre"
    assert main(["pretrain", *tiny_flags, "--fraction", "0.05", "--out", str(pre)]) == 0
    line = run_error(capsys, ["export", str(pre), "--to", str(tmp_path / "y")])
    assert "is a pretrain run: its classifier head was never trained" in line and "--method sslft" in line


def test_best_of_an_unfinished_run_says_it_has_not_finished(tmp_path, runs, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(runs[8], run)
    for name in ("summary.json", "model.safetensors"):
        (run / name).unlink()
    for extra in ([], ["--best"]):
        line = run_error(capsys, ["export", str(run), *extra, "--to", str(tmp_path / "x")])
        assert "the run has not finished yet; resume it" in line


def test_the_model_card_parses_and_its_numbers_are_the_summarys(tmp_path, tiny_flags, capsys):
    """README.md in the Hub's model-card format: huggingface_hub reads its front matter, and every accuracy in it
    is summary.json's, labelled with the epoch it belongs to; the run's config is beside it."""
    from huggingface_hub import ModelCard

    from ssat.config import Config, load_yaml
    run = tmp_path / "run"
    assert main(["train", *tiny_flags, "--per-class", "6", "--val-fraction", "0.2", "--epochs", "2",
                 "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    to = tmp_path / "export"
    assert main(["export", str(run), "--selected", "--to", str(to), "--license", "mit"]) == 0
    card = ModelCard.load(to / "README.md")
    assert (card.data.library_name, card.data.license, card.data.datasets) == ("timm", "mit", ["digits"])
    assert {"image-classification", "timm", "ssat", "mae"} <= set(card.data.tags)
    assert card.data.metrics == ["accuracy"]
    values = {r.metric_name: r.metric_value for r in card.data.eval_results}
    chosen = f"validation-selected epoch ({summary['selected_epoch']})"
    assert values == {"test top-1 accuracy (%), last epoch (2)": summary["test_acc1"],
                      "test top-5 accuracy (%), last epoch (2)": summary["test_acc5"],
                      f"test top-1 accuracy (%), {chosen}": summary["test_acc1_selected"],
                      f"test top-5 accuracy (%), {chosen}": summary["test_acc5_selected"],
                      f"validation top-1 accuracy (%), {chosen}": summary["val_acc1_selected"]}
    assert f"These weights are from the {chosen}" in card.text
    assert f"{summary['n_train']} trained on, {summary['n_val']} held out" in card.text
    assert f"| test top-1 accuracy (%), last epoch (2) | {summary['test_acc1']:.2f} % |" in card.text
    assert "ssat train --config ssat-config.yaml" in card.text and f"local-dir:{to.resolve()}" in card.text
    written = load_yaml(to / "ssat-config.yaml")  # the run's config, without this machine's folders
    assert written["out"] is None and written["data_root"] is None
    assert Config.from_dict(written) == Config.from_dict({**load_yaml(run / "config.yaml"), "out": None})


def test_a_weights_file_without_its_run_gets_a_card_without_numbers(tmp_path, runs, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub import ModelCard

    class Offline:  # the Hub, without a network: accepts the upload
        def create_repo(self, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            pass
    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.safetensors").write_bytes((runs[8] / "model.safetensors").read_bytes())
    assert main(["export", str(alone / "model.safetensors"), "--to", str(tmp_path / "e"),
                 "--push-to-hub", "me/x"]) == 0
    card = ModelCard.load(tmp_path / "e" / "README.md")
    assert not card.data.eval_results and card.data.license == "unknown"
    assert "Unknown: exported without its run folder" in card.text and 'create_model("hf-hub:me/x"' in card.text
