"""Every error a user can cause: one line naming the problem and the fix, exit code 2, no traceback."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from conftest import run_error
from fixtures import write_cifar
from ssat.cli import main
from ssat.config import Config


@pytest.mark.parametrize("argv,message", [
    (["--model", "vit_huge_nonexistent"], "unknown model 'vit_huge_nonexistent'; choose one of: "),
    (["--dataset", "imagenet22k"], "unknown data set 'imagenet22k'; choose one of: "),
    (["--method", "byol"], "unknown method 'byol'; choose one of: pretrain, scratch, ssat, sslft"),
    (["--aux", "jigsaw"], "unknown auxiliary task 'jigsaw'; choose one of: auto, dino, drloc, guidance, mae"),
    (["--lambda", "1.5"], "--lambda must be in [0, 1], got 1.5"),
    (["--lambda", "-0.1"], "--lambda must be in [0, 1]"),
    (["--mask-ratio", "1"], "--mask-ratio must be in (0, 1), got 1.0"),
    (["--mask-ratio", "0"], "--mask-ratio must be in (0, 1)"),
    (["--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    (["--fraction", "1.5"], "--fraction must be in (0, 1]"),
    (["--epochs", "abc"], "option 'epochs' must be a int, got 'abc'"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--decoder-heads", "0"], "--decoder-heads must be at least 1, got 0"),
    (["--decoder-depth", "-1"], "--decoder-depth must be at least 1, got -1"),
    (["--decoder-heads", "3"], "must be divisible by --decoder-heads (3)"),
    (["--aux", "dino", "--dino-out-dim", "0"], "--dino-out-dim must be at least 1, got 0"),
    (["--img-size", "30", "--patch-size", "4"], "--img-size 30 is not a multiple of --patch-size 4"),
    (["--mask-ratio", "0.99"], "leaves no visible patch out of 16"),
    (["--crop", "zoom"], "unknown crop 'zoom'; choose one of: auto, none, pad, rrc"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "--device"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--dataset", "cifar10"], "CIFAR-10 not found"),
    (["--dataset", "imagefolder", "--data-root", "/nonexistent"], "does not exist"),
    (["--config", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
])
def test_train_errors(capsys, tmp_path, tiny_flags, argv, message):
    line = run_error(capsys, ["train", *tiny_flags, "--out", str(tmp_path / "r"), *argv])
    assert message in line


def test_checkpoint_errors(capsys, tmp_path, tiny_flags):
    assert "does not exist" in run_error(capsys, ["eval", "--checkpoint", str(tmp_path / "nope")])
    (tmp_path / "junk.pt").write_bytes(b"junk")
    assert "not a loadable checkpoint" in run_error(capsys, ["eval", "--checkpoint", str(tmp_path / "junk.pt")])
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0
    # another run into the same directory would silently mix two runs
    assert "holds a finished run; choose another --out, or pass --overwrite" in run_error(
        capsys, ["train", *tiny_flags, "--out", str(out)])
    # resuming with different settings would silently change the experiment
    assert "lam cannot be changed" in run_error(capsys, ["train", "--resume", str(out), "--lambda", "0.5"])
    # wrong class count: a digits model evaluated on CIFAR-100
    write_cifar(tmp_path / "c100", "cifar100", per_class=1)
    line = run_error(capsys, ["eval", "--checkpoint", str(out), "--dataset", "cifar100",
                              "--data-root", str(tmp_path / "c100")])
    assert "wrong class count: the checkpoint predicts 10 classes but cifar100 has 100" in line
    # incompatible weights: a tensor of the wrong shape
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(out / "model.safetensors"))
    tensors["head.weight"] = torch.zeros(7, tensors["head.weight"].shape[1])
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    assert "does not fit model vit_test" in run_error(capsys, ["eval", "--checkpoint",
                                                               str(tmp_path / "bad.safetensors")])
    assert "image" in run_error(capsys, ["predict", "--checkpoint", str(out), str(tmp_path / "none.png")])
    assert "is a folder; pass image files" in run_error(capsys, ["predict", "--checkpoint", str(out),
                                                               str(tmp_path)])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert "not a readable image" in run_error(capsys, ["predict", "--checkpoint", str(out),
                                                        str(tmp_path / "bad.png")])
    (out / "summary.json").unlink()
    (out / "model.safetensors").unlink()  # as if killed mid-run: --overwrite does not replace an unfinished run
    assert "already holds an unfinished run; continue it with --resume" in run_error(
        capsys, ["train", *tiny_flags, "--overwrite", "--out", str(out)])


def test_yaml_config_is_overridden_by_flags(tmp_path):
    from conftest import TINY, as_flags
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lambda: 0.3\nmask-ratio: 0.5\nepochs: 1\nfraction: 0.05\nblr: 2e-3\n")
    out = tmp_path / "r"
    flags = as_flags({k: v for k, v in TINY.items() if k != "lam"})  # lambda comes from the YAML file here
    assert main(["train", *flags, "--config", str(cfg_file), "--mask-ratio", "0.6", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lambda"] == 0.3 and summary["mask_ratio"] == 0.6
    assert summary["lr"] == pytest.approx(2e-3 * 64 / 256)


def test_preset_sits_below_yaml_and_flags(tmp_path):
    import yaml

    from ssat.cli import build_parser
    from ssat.commands.train import config_from_args
    paper = yaml.safe_load((Path(__file__).parents[1] / "src/ssat/presets/paper.yaml").read_text())
    cfg, _ = config_from_args(build_parser().parse_args(["train", "--preset", "paper"]))
    assert (cfg.img_size, cfg.patch_size, cfg.init, cfg.lam, cfg.val_fraction, cfg.eval_every) == \
        (paper["img_size"], paper["patch_size"], "mae", 0.1, 0.0, 1)
    assert (cfg.rand_augment, cfg.reprob, cfg.crop, cfg.epochs) == ("rand-m9-mstd0.5-inc1", 0.25, "rrc", 100)
    (tmp_path / "c.yaml").write_text("preset: paper\nepochs: 7\nlambda: 0.3\n")
    cfg, _ = config_from_args(build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"),
                                                          "--lambda", "0.4"]))
    assert (cfg.preset, cfg.epochs, cfg.lam, cfg.img_size) == ("paper", 7, 0.4, 224)
    cfg, _ = config_from_args(build_parser().parse_args(["train", "--preset", "paper", "--img-size", "32",
                                                          "--patch-size", "4"]))
    assert (cfg.img_size, cfg.patch_size, cfg.init) == (32, 4, "mae")


def test_unknown_preset_is_a_one_line_error(capsys, tmp_path, tiny_flags):
    assert "unknown preset 'reference'; choose one of: " in run_error(
        capsys, ["train", *tiny_flags, "--preset", "reference", "--out", str(tmp_path / "r")])


def test_yaml_with_an_unknown_key_is_refused(tmp_path, tiny_flags, capsys):
    (tmp_path / "c.yaml").write_text("mask_ration: 0.5\n")
    line = run_error(capsys, ["train", *tiny_flags, "--config", str(tmp_path / "c.yaml")])
    assert "unknown option(s) mask_ration" in line


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(Config):
        assert (f.metadata.get("flag") or "--" + f.name.replace("_", "-")) in text
    assert "vit_tiny" in text and "digits" in text and "--resume" in text
    for command in ("eval", "predict", "table"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--checkpoint" in capsys.readouterr().out or command == "table"


def test_table_compares_with_scratch(tmp_path, tiny_flags, capsys):
    for method in ("scratch", "ssat"):
        assert main(["train", *tiny_flags, "--fraction", "0.05", "--method", method,
                     "--out", str(tmp_path / method)]) == 0
    capsys.readouterr()
    assert main(["table", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    rows = {line.split("|")[2].strip().split()[0]: line for line in table.splitlines()[2:]}
    scratch = json.loads((tmp_path / "scratch" / "summary.json").read_text())["test_acc1"]
    ssat = json.loads((tmp_path / "ssat" / "summary.json").read_text())["test_acc1"]
    assert f"{ssat - scratch:+.2f}" in rows["ssat"]
    assert "holds no finished run" in run_error(capsys, ["table", str(tmp_path / "empty-nothing")])


@pytest.mark.parametrize("argv,message", [
    (["eval", "--checkpoint", "x", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["eval", "--checkpoint", "x", "--perturb-seed", "-1"], "--perturb-seed at least 0"),
    (["gradcam", "--checkpoint", "x", "--n", "0"], "--n must be at least 1"),
    (["reconstruct", "--checkpoint", "x", "--n", "0"], "--n must be at least 1"),
    (["models", "--img-size", "0"], "--img-size, --patch-size, --in-chans and --classes must be at least 1"),
])
def test_other_commands_refuse_out_of_range_numbers(capsys, argv, message):
    assert message in run_error(capsys, argv)


@pytest.mark.parametrize("spec", ["blur:inf", "rotate:inf", "noise:1e9", "blur:nan", "jpeg:0"])
def test_perturbation_severity_out_of_range_is_one_line(capsys, tmp_path, tiny_flags, spec):
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0
    assert "severity out of range" in run_error(capsys, ["eval", "--checkpoint", str(out), "--perturb", spec])


def test_contrastive_aux_with_a_batch_of_one_is_refused(capsys, tmp_path, tiny_flags):
    line = run_error(capsys, ["train", *tiny_flags, "--aux", "simclr", "--batch-size", "1", "--out",
                              str(tmp_path / "r")])
    assert "--aux simclr compares the images of a batch" in line


def test_predict_decodes_like_training_and_refuses_decompression_bombs(tmp_path, tiny_flags, capsys, monkeypatch):
    import numpy as np
    from PIL import Image

    from ssat.data.files import decode
    from ssat.inference import read_image
    sixteen, clear = tmp_path / "16.png", tmp_path / "clear.png"
    Image.fromarray(np.full((8, 8), 40000, dtype=np.uint16)).save(sixteen)
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(clear)
    for path in (sixteen, clear):
        assert np.array_equal(np.asarray(read_image(str(path), 1)), np.asarray(decode(path, "L")))
    assert np.asarray(read_image(str(clear), 1)).min() == 255  # transparent is white, as in training
    assert np.asarray(read_image(str(sixteen), 1))[0, 0] == round(40000 / 65535 * 255)  # rescaled, not clipped
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0
    bomb = tmp_path / "bomb.png"
    Image.new("1", (64, 64)).save(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 = 4096 > 2 x 1000: PIL refuses it as a bomb
    line = run_error(capsys, ["predict", "--checkpoint", str(out), str(bomb)])
    assert "is not a readable image (DecompressionBombError" in line


def test_a_closed_pipe_ends_quietly(tmp_path, tiny_flags):
    import subprocess
    import sys
    out = tmp_path / "run"
    assert main(["train", *tiny_flags, "--fraction", "0.05", "--out", str(out)]) == 0
    for i in range(100):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "summary.json").write_text((out / "summary.json").read_text())
    # The same runs listed 10 times: ~150 kB, more than a pipe holds once `head` has gone.
    result = subprocess.run(f"{sys.executable} -m ssat table {' '.join([str(tmp_path)] * 10)} | head -c 10",
                            shell=True, capture_output=True, text=True)
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr


def test_unknown_country_is_refused_before_training(capsys, tmp_path, tiny_flags):
    line = run_error(capsys, ["train", *tiny_flags, "--energy", "--country", "ZZZ", "--out", str(tmp_path / "r")])
    assert "--country ZZZ is not a grid codecarbon knows" in line
    assert not (tmp_path / "r").exists()


def test_an_empty_test_split_is_refused_before_training(capsys, tmp_path, tiny_flags, monkeypatch):
    import dataclasses

    import numpy as np

    from ssat import engine
    from ssat.data import DATASETS, load_dataset, register_dataset
    from ssat.data.registry import ArrayDataset
    if "digits_no_test" not in DATASETS:
        @register_dataset("digits_no_test", "test-only: digits with an empty test split (e.g. a bad release)")
        def load(root, download, options):
            data = load_dataset("digits")
            return dataclasses.replace(data, test=ArrayDataset(np.zeros((0, 8, 8), np.uint8), []))
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: pytest.fail("trained before checking"))
    line = run_error(capsys, ["train", *tiny_flags, "--dataset", "digits_no_test", "--out", str(tmp_path / "r")])
    assert "digits: the test split holds no image" in line
