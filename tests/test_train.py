"""End to end through the CLI entry point on the bundled digits data, with the tiny test ViT."""

import json
import warnings

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from ssat import engine
from ssat.cli import main
from ssat.cost import EnergyMeter
from ssat.data import load_dataset
from ssat.engine import resolve_precision


def train(tmp_path, flags, *extra, name="run"):
    out = tmp_path / name
    assert main(["train", *flags, "--out", str(out), *extra]) == 0
    return out


def test_one_epoch_writes_every_run_file(tmp_path, tiny_flags, capsys):
    out = train(tmp_path, tiny_flags, "--energy")
    assert {p.name for p in out.iterdir()} == {"config.yaml", "metrics.jsonl", "summary.json", "subset.json",
                                               "checkpoint-last.pt", "model.safetensors", "energy.json", ".lock",
                                               ".ssat-run"}
    subset = json.loads((out / "subset.json").read_text())
    assert subset["indices"] == list(range(1437)) and subset["n_full"] == 1437
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["img_size"] == 8 and config["patch_size"] == 2 and config["hflip"] is False  # resolved
    (row,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"epoch", "lr", "loss", "loss_primary", "loss_aux", "train_acc1", "train_acc5", "test_acc1", "test_acc5",
            "epoch_time_s"} <= set(row)
    summary = json.loads((out / "summary.json").read_text())
    assert {"method", "model", "dataset", "epochs", "test_acc1", "test_acc5", "test_acc1_max", "params",
            "train_time_s"} <= set(summary)
    assert summary["test_acc1"] == row["test_acc1"] and summary["n_train"] == 1437 and summary["n_test"] == 360
    assert summary["lr"] == pytest.approx(1e-3 * 64 / 256)
    # What the run cost: FLOPs from the counter (a training step > 3x inference for SSAT: backward + aux stream),
    # memory, hardware, and energy / CO2 measured by codecarbon offline (or None with the reason).
    assert summary["gflops_train_step"] > 3 * summary["gflops_inference"] > 0
    assert summary["train_gflops_total"] == pytest.approx(summary["gflops_train_step"] * 1408, abs=0.1)
    assert summary["peak_rss_gb"] > 0 and summary["hardware"]["cpu_count"] >= 1
    if summary["energy_kwh"] is None:
        assert "codecarbon could not measure" in summary["energy_note"]
    else:
        assert summary["energy_kwh"] > 0 and summary["emissions_kg"] > 0 and "offline, USA" in summary["energy_note"]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["test_acc1"] == summary["test_acc1"]


def test_energy_meter_writes_no_emissions_csv_and_avoids_deprecated_codecarbon_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # codecarbon writes emissions.csv to the working directory unless told not to
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = EnergyMeter("USA").stop()
    assert set(result) == {"energy_kwh", "emissions_kg", "energy_note"}
    assert list(tmp_path.iterdir()) == []
    assert not [w for w in caught if "save_to" in str(w.message)]


def test_weights_file_is_encoder_and_head_only_and_loads_in_timm(tmp_path, tiny_flags):
    out = train(tmp_path, tiny_flags)
    tensors = load_file(str(out / "model.safetensors"))
    assert "head.weight" in tensors and not any("decoder" in k for k in tensors)
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        spec = json.loads(f.metadata()["timm"])
    plain = timm.create_model(spec.pop("name"), pretrained=False, **spec)
    plain.load_state_dict(tensors)  # strict: exactly the encoder + head


def test_eval_reproduces_the_runs_test_accuracy_and_predict_labels_images(tmp_path, tiny_flags, capsys):
    out = train(tmp_path, tiny_flags)
    summary = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    for ckpt in (out, out / "checkpoint-last.pt", out / "model.safetensors"):
        assert main(["eval", "--checkpoint", str(ckpt), "--device", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["acc1"] == pytest.approx(summary["test_acc1"]) and result["n"] == 360
    test = load_dataset("digits").test
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        test[i][0].save(paths[-1])
    assert main(["predict", "--checkpoint", str(out), "--topk", "3", *map(str, paths)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["image"] for r in rows] == list(map(str, paths))
    assert all(len(r["top"]) == 3 and r["top"][0]["prob"] >= r["top"][1]["prob"] for r in rows)
    assert all(r["top"][0]["label"] in [str(d) for d in range(10)] for r in rows)


def test_scratch_run_has_no_aux_loss(tmp_path, tiny_flags):
    out = train(tmp_path, tiny_flags, "--method", "scratch")
    row = json.loads((out / "metrics.jsonl").read_text())
    assert row["loss_aux"] is None and row["loss"] == pytest.approx(row["loss_primary"])


def test_fraction_trains_on_the_stratified_subset(tmp_path, tiny_flags, capsys):
    out = train(tmp_path, tiny_flags, "--fraction", "0.1", "--quiet", "--no-quiet")
    per_class = np.bincount(load_dataset("digits").train_targets)
    expected = [max(1, round(0.1 * n)) for n in per_class]
    assert json.loads((out / "summary.json").read_text())["n_train"] == sum(expected)
    logged = capsys.readouterr().err
    assert "per class " + ", ".join(f"{c}={n}" for c, n in enumerate(expected)) in logged


def test_two_views_and_accumulation_and_clipping_run(tmp_path, tiny_flags):
    out = train(tmp_path, tiny_flags, "--two-views", "--accum-steps", "2", "--clip-grad", "1.0")
    assert json.loads((out / "summary.json").read_text())["batch_size"] == 128


def _comparable(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


@pytest.mark.parametrize("loader", ["memory", "pil"])
def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path, tiny_flags, monkeypatch, loader):
    flags = [*tiny_flags, "--epochs", "3", "--fraction", "0.3", "--warmup-epochs", "1", "--loader", loader]
    full = train(tmp_path, flags, name="full")

    real_epoch = engine.train_one_epoch
    calls = {"n": 0}

    def killed_in_third_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the process were killed mid-epoch
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", killed_in_third_epoch)
    assert main(["train", *flags, "--out", str(tmp_path / "killed")]) == 130
    killed = tmp_path / "killed"
    assert not (killed / "summary.json").exists() and len(_comparable(killed)) == 2
    monkeypatch.setattr(engine, "train_one_epoch", real_epoch)

    assert main(["train", "--resume", str(killed)]) == 0
    assert _comparable(killed) == _comparable(full)
    a = torch.load(full / "checkpoint-last.pt", weights_only=True)["model"]
    b = torch.load(killed / "checkpoint-last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for key in ("test_acc1", "test_acc5", "test_acc1_max"):
        assert json.loads((full / "summary.json").read_text())[key] == \
            json.loads((killed / "summary.json").read_text())[key]


def test_resume_can_extend_a_finished_run(tmp_path, tiny_flags, capsys):
    out = train(tmp_path, tiny_flags, "--warmup-epochs", "0")
    assert main(["train", "--resume", str(out)]) == 0  # nothing left to do: reports and exits cleanly
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert [r["epoch"] for r in _comparable(out)] == [1, 2]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_precision_bf16_on_cpu_trains(tmp_path, tiny_flags):
    out = train(tmp_path, tiny_flags, "--precision", "bf16", "--fraction", "0.2", "--no-deterministic")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == "bfloat16" and np.isfinite(summary["test_acc1"])


@pytest.mark.parametrize("native_bf16, expected", [(True, (torch.bfloat16, False)), (False, (torch.float16, True))])
def test_auto_precision(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16)
    assert resolve_precision("auto", torch.device("cuda")) == expected  # pre-Ampere GPUs get fp16 + GradScaler
    assert resolve_precision("auto", torch.device("cpu")) == (None, False)  # CPU: fp32 (see resolve_precision)
    assert resolve_precision("bf16", torch.device("cpu")) == (torch.bfloat16, False)  # an explicit choice wins


def test_predict_on_grayscale_model_accepts_rgb_files(tmp_path, tiny_flags, capsys):
    out = train(tmp_path, tiny_flags, "--fraction", "0.1")
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(rgb)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), str(rgb)]) == 0
    assert json.loads(capsys.readouterr().out)["image"] == str(rgb)


def test_resume_writes_into_the_resumed_directory_even_if_it_moved(tmp_path, tiny_flags, monkeypatch):
    flags = [*tiny_flags, "--epochs", "2", "--fraction", "0.1"]
    real_epoch = engine.train_one_epoch
    calls = {"n": 0}

    def killed_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)
    monkeypatch.setattr(engine, "train_one_epoch", killed_in_second_epoch)
    assert main(["train", *flags, "--out", str(tmp_path / "before")]) == 130
    monkeypatch.setattr(engine, "train_one_epoch", real_epoch)
    (tmp_path / "before").rename(tmp_path / "after")
    assert main(["train", "--resume", str(tmp_path / "after" / "checkpoint-last.pt")]) == 0
    assert (tmp_path / "after" / "summary.json").exists() and not (tmp_path / "before").exists()


@pytest.mark.parametrize("best", [False, True])
def test_export_reloads_in_plain_timm_with_identical_logits(tmp_path, tiny_flags, capsys, best):
    from ssat.inference import load_classifier
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--per-class", "3", "--val-per-class", "1", "--out", str(out)]) == 0
    assert main(["export", str(out), "--to", str(tmp_path / "timm"), *(["--selected"] if best else [])]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["max_logit_difference"] <= 1e-5
    plain = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    assert plain.pretrained_cfg["label_names"] == [str(i) for i in range(10)]
    model, _, _ = load_classifier(str(out / ("model-selected.safetensors" if best else "model.safetensors")),
                                  torch.device("cpu"))
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(plain(x), model.eval()(x), atol=1e-5)


def test_export_errors_and_push_to_a_hub_stand_in(tmp_path, tiny_flags, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--per-class", "2", "--out", str(out)]) == 0
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", str(out), "--to", str(tmp_path / "full")]) == 2
    assert capsys.readouterr().err.strip().endswith("is not an empty folder; give a new or empty folder")
    assert main(["export", str(out), "--selected", "--to", str(tmp_path / "b")]) == 2  # no validation split
    assert "no validation split to select an epoch (--val-fraction 0): export without --selected" in \
        capsys.readouterr().err

    import huggingface_hub
    calls = []

    class FakeApi:  # the Hub, without a network: record what would be uploaded
        def create_repo(self, repo_id, exist_ok, private):
            calls.append(("create", repo_id))

        def upload_folder(self, repo_id, folder_path, commit_message):
            calls.append(("upload", repo_id, sorted(p.name for p in (tmp_path / "hub").iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert main(["export", str(out), "--to", str(tmp_path / "hub"), "--push-to-hub", "me/digits-vit"]) == 0
    uploaded = ["README.md", "config.json", "model.safetensors", "ssat-config.yaml"]  # the card goes with the weights
    assert calls == [("create", "me/digits-vit"), ("upload", "me/digits-vit", uploaded)]
    assert json.loads(capsys.readouterr().out)["hub"] == "hf-hub:me/digits-vit"


def test_model_ema_follows_its_formula_and_is_what_gets_evaluated_and_saved(tmp_path, tiny_flags):
    """--model-ema d: after each optimizer step ema = d·ema + (1−d)·weights; the saved weights are the average."""
    from timm.utils import ModelEmaV3

    from ssat.config import Config
    from ssat.objective import build_model
    torch.manual_seed(0)
    model = build_model(Config.from_dict({"model": "vit_test", "img_size": 8, "patch_size": 2, "method": "scratch"}),
                        num_classes=10, in_chans=1)
    ema = ModelEmaV3(model.backbone, decay=0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(torch.randn(4, 1, 8, 8), torch.arange(4)).loss.backward()
    optimizer.step()
    ema.update(model.backbone)
    now = model.backbone.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.9 * before[k] + 0.1 * now[k], atol=1e-6), k

    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--per-class", "5", "--epochs", "2", "--model-ema", "0.5",
                 "--out", str(out)]) == 0
    state = torch.load(out / "checkpoint-last.pt", weights_only=True)
    saved = load_file(str(out / "model.safetensors"))
    raw = {k[len("backbone.encoder."):]: v for k, v in state["model"].items() if k.startswith("backbone.encoder.")}
    averaged = {k[len("encoder."):]: v for k, v in state["ema"].items() if k.startswith("encoder.")}
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert any(not torch.equal(saved[k], raw[k]) for k in saved)  # the average, not the last weights
    # a resumed run continues the same average (resume equivalence covers the rest)
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 0


def test_mixup_and_cutmix_mix_targets_as_the_images_and_train(tmp_path, tiny_flags, monkeypatch):
    import numpy as np
    import torch.nn.functional as F

    from ssat.config import Config
    from ssat.data.mix import build_mix
    from ssat.objective import build_model
    cfg = Config.from_dict({"model": "vit_test", "img_size": 8, "patch_size": 2, "mixup": 0.8,
                            "label_smoothing": 0.1, "lam": 0.5, "balance": "none"}).validate()
    mix = build_mix(cfg, num_classes=10)
    np.random.seed(0)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4])
    mixed, soft = mix(x.clone(), y)
    lam = float(soft[0, 1] - 0.01) / 0.9  # smoothing 0.1 over 10 classes: 0.01 off, 0.91 on
    expected = lam * (F.one_hot(y, 10) * 0.9 + 0.01) + (1 - lam) * (F.one_hot(y.flip(0), 10) * 0.9 + 0.01)
    assert torch.allclose(soft, expected, atol=1e-6) and 0 < lam < 1
    assert torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)  # the images in the same proportion
    model = build_model(cfg, num_classes=10, in_chans=1)
    torch.manual_seed(0)
    out = model(mixed, soft)
    assert torch.allclose(out.parts["loss_primary"], -(soft * F.log_softmax(out.logits, 1)).sum(1).mean())

    out_dir = tmp_path / "run"
    assert main(["train", *tiny_flags, "--per-class", "4", "--batch-size", "8", "--mixup", "0.8", "--cutmix", "1.0",
                 "--out", str(out_dir)]) == 0
    assert json.loads((out_dir / "metrics.jsonl").read_text().splitlines()[0])["train_acc1"] >= 0
    assert main(["train", *tiny_flags, "--mixup", "0.8", "--batch-size", "7", "--out", str(tmp_path / "odd")]) == 2
