"""Pretrained weights by name (`--pretrained timm`, `timm:TAG`, `hf-hub:USER/REPO`): resolved through timm's
pretrained configs into the Hugging Face cache (here a temporary one in huggingface_hub's own layout; no network),
loaded as a local file is, recorded in config.yaml with the file's SHA-256; offline without them: one line."""

import hashlib

import pytest
import timm
import yaml
from safetensors.torch import load_file, save_file

from conftest import run_error
from ssat.cli import main
from ssat.config import Config
from ssat.objective import build_model

TINY_REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # vit_tiny's default timm weights


def put_in_cache(cache, repo: str, tensors: dict):
    """A repository's model.safetensors as huggingface_hub stores it: refs/main -> snapshots/<commit>/FILE."""
    commit = hashlib.sha1(repo.encode()).hexdigest()
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    path = folder / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_timm_weights_by_name_load_from_the_cache_and_are_recorded(hub):
    weights = timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict()
    path = put_in_cache(hub, TINY_REPO, weights)
    cfg = Config.from_dict({"model": "vit_tiny", "method": "scratch", "pretrained": "timm", "img_size": 32,
                            "patch_size": 16}).validate()
    model = build_model(cfg, num_classes=3, in_chans=3)
    own = model.backbone.encoder.state_dict()
    assert (own["blocks.0.attn.qkv.weight"] == weights["blocks.0.attn.qkv.weight"]).all()
    assert not (own["head.weight"].shape == weights["head.weight"].shape)  # the head is the run's own
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.pretrained_source == ("timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k", digest)
    # another tag, and any Hub repository
    put_in_cache(hub, "timm/vit_tiny_patch16_224.augreg_in21k", weights)
    tagged = build_model(Config.from_dict({**cfg.to_dict(), "pretrained": "timm:augreg_in21k"}), num_classes=3,
                         in_chans=3)
    assert tagged.pretrained_source[0] == "timm:vit_tiny_patch16_224.augreg_in21k"
    put_in_cache(hub, "someone/my-vit", weights)
    mine = build_model(Config.from_dict({**cfg.to_dict(), "pretrained": "hf-hub:someone/my-vit"}), num_classes=3,
                       in_chans=3)
    assert mine.pretrained_source == ("hf-hub:someone/my-vit", digest)


def test_a_run_records_the_resolved_tag_and_hash_and_refuses_other_weights(hub, tmp_path, tiny_flags, capsys):
    path = put_in_cache(hub, TINY_REPO, timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict())
    out = tmp_path / "run"
    flags = [*tiny_flags, "--model", "vit_tiny", "--method", "sslft", "--pretrained", "timm", "--per-class", "4"]
    assert main(["train", *flags, "--out", str(out)]) == 0
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["pretrained"] == "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert recorded["pretrained_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    tensors = load_file(str(path))  # the Hub's weights change: a rerun with the recorded hash refuses them
    tensors["blocks.0.attn.qkv.weight"] += 1
    save_file(tensors, str(path))
    line = run_error(capsys, ["train", "--config", str(out / "config.yaml"), "--out", str(tmp_path / "again")])
    assert "its weights file has SHA-256" in line and "the weights changed since" in line


def test_offline_without_the_weights_is_one_line_naming_how_to_fetch_them(hub, tmp_path, tiny_flags, capsys):
    line = run_error(capsys, ["train", *tiny_flags, "--model", "vit_tiny", "--method", "sslft", "--pretrained",
                              "timm", "--out", str(tmp_path / "x")])
    assert f"{TINY_REPO}/model.safetensors is not in the Hugging Face cache" in line
    assert f"huggingface-cli download {TINY_REPO} model.safetensors" in line
    line = run_error(capsys, ["train", *tiny_flags, "--model", "vit_tiny", "--method", "sslft", "--pretrained",
                              "timm:no_such_tag", "--out", str(tmp_path / "y")])
    assert "timm has no Hub weights for vit_tiny_patch16_224.no_such_tag" in line
    line = run_error(capsys, ["train", *tiny_flags, "--model", "cvt_13", "--method", "sslft", "--pretrained",
                              "timm", "--out", str(tmp_path / "z")])
    assert "no timm equivalent" in line


def test_a_resumed_run_does_not_check_its_starting_weights_again(hub, tmp_path, tiny_flags):
    """Its weights come from its checkpoint: weights changed on the Hub since must not stop the resume."""
    path = put_in_cache(hub, TINY_REPO, timm.create_model("vit_tiny_patch16_224", pretrained=False).state_dict())
    out = tmp_path / "run"
    flags = [*tiny_flags, "--model", "vit_tiny", "--method", "sslft", "--pretrained", "timm", "--per-class", "4"]
    assert main(["train", *flags, "--out", str(out)]) == 0
    before = yaml.safe_load((out / "config.yaml").read_text())["pretrained_sha256"]
    tensors = load_file(str(path))
    tensors["blocks.0.attn.qkv.weight"] += 1
    save_file(tensors, str(path))
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["pretrained_sha256"] == before
