"""Every error a user can cause: one line naming the problem and the fix, exit code 2, no traceback."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from ssat.cli import main
from ssat.config import Config

from fixtures import write_cifar


def run_error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssat: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("argv,message", [
    (["--model", "vit_huge_nonexistent"], "unknown model 'vit_huge_nonexistent'; choose one of: "),
    (["--dataset", "imagenet22k"], "unknown data set 'imagenet22k'; choose one of: "),
    (["--method", "byol"], "unknown method 'byol'; choose one of: pretrain, scratch, ssat, sslft"),
    (["--aux", "jigsaw"], "unknown auxiliary task 'jigsaw'; choose one of: dino, mae, simclr"),
    (["--lambda", "1.5"], "--lambda must be in [0, 1], got 1.5"),
    (["--lambda", "-0.1"], "--lambda must be in [0, 1]"),
    (["--mask-ratio", "1"], "--mask-ratio must be in (0, 1), got 1.0"),
    (["--mask-ratio", "0"], "--mask-ratio must be in (0, 1)"),
    (["--fraction", "0"], "--fraction must be in (0, 1], got 0.0"),
    (["--fraction", "1.5"], "--fraction must be in (0, 1]"),
    (["--epochs", "abc"], "option 'epochs' must be a int, got 'abc'"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--decoder-heads", "0"], "--decoder-dim, --decoder-depth and --decoder-heads must be at least 1"),
    (["--decoder-depth", "-1"], "--decoder-dim, --decoder-depth and --decoder-heads must be at least 1"),
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
    assert "already holds a run; continue it with --resume" in run_error(
        capsys, ["train", *tiny_flags, "--out", str(out)])
    # resuming with different settings would silently change the experiment
    assert "lam cannot be changed" in run_error(capsys, ["train", "--resume", str(out), "--lambda", "0.5"])
    # wrong class count: a digits model evaluated on CIFAR-100
    write_cifar(tmp_path / "c100", "cifar100", per_class=1)
    line = run_error(capsys, ["eval", "--checkpoint", str(out), "--dataset", "cifar100",
                              "--data-root", str(tmp_path / "c100")])
    assert "wrong class count: the checkpoint predicts 10 classes but cifar100 has 100" in line
    # incompatible weights: a tensor of the wrong shape
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(out / "model.safetensors"))
    tensors["head.weight"] = torch.zeros(7, tensors["head.weight"].shape[1])
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    assert "does not fit model vit_test" in run_error(capsys, ["eval", "--checkpoint",
                                                               str(tmp_path / "bad.safetensors")])
    assert "image" in run_error(capsys, ["predict", "--checkpoint", str(out), str(tmp_path / "none.png")])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert "not a readable image" in run_error(capsys, ["predict", "--checkpoint", str(out),
                                                        str(tmp_path / "bad.png")])


def test_yaml_config_is_overridden_by_flags(tmp_path, tiny_flags):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lambda: 0.3\nmask-ratio: 0.5\nepochs: 1\nfraction: 0.05\nblr: 2e-3\n")
    out = tmp_path / "r"
    assert main(["train", *tiny_flags, "--config", str(cfg_file), "--mask-ratio", "0.6", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lambda"] == 0.3 and summary["mask_ratio"] == 0.6
    assert summary["lr"] == pytest.approx(2e-3 * 64 / 256)


def test_preset_sits_below_yaml_and_flags(tmp_path):
    import yaml
    from ssat.cli import build_parser, config_from_args
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
