"""Pretrained weights by name, from where users keep them: `--pretrained timm` (the backbone's default timm weights),
`timm:TAG` (another of timm's tags, e.g. augreg_in21k_ft_in1k) or `hf-hub:USER/REPO` (any Hub repository holding a
model.safetensors). They resolve through timm's pretrained configs and huggingface_hub into the standard Hugging
Face cache, then load exactly as a local file does. HF_HUB_OFFLINE=1 uses the cache alone."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from ssat.errors import UserError, first_line


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, read now (a test or a user may set it after import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_named(spec: Optional[str]) -> bool:
    return spec is not None and (spec == "timm" or spec.startswith(("timm:", "hf-hub:")))


def repo_of(spec: str, timm_name: Optional[str]) -> tuple[str, str]:
    """-> (what the run records: `timm:ARCH.TAG` or `hf-hub:USER/REPO`, the Hub repository to read)."""
    if spec.startswith("hf-hub:"):
        repo = spec[len("hf-hub:"):]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UserError(f"--pretrained {spec}: name a Hub repository as hf-hub:USER/REPO")
        return spec, repo
    if not timm_name:
        raise UserError(f"--pretrained {spec}: this backbone has no timm equivalent, so timm has no weights for it; "
                        f"give a file, a run directory or hf-hub:USER/REPO")
    tag = spec[len("timm:"):] if spec.startswith("timm:") else ""
    arch = timm_name.split(".")[0]
    name = tag if "." in tag else f"{arch}.{tag}" if tag else arch  # timm:TAG, or the recorded timm:ARCH.TAG
    if name.split(".")[0] != arch:
        raise UserError(f"--pretrained {spec}: these are weights of {name.split('.')[0]}, but the backbone is {arch}; "
                        f"name a tag of {arch}")
    from timm.models import get_pretrained_cfg
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        raise UserError(f"--pretrained {spec}: timm has no Hub weights for {name}; "
                        f"`python -c \"import timm; print(timm.list_pretrained('{arch}*'))\"` lists its tags")
    return f"timm:{cfg.hf_hub_id.split('/', 1)[1]}", cfg.hf_hub_id


def fetch(spec: str, timm_name: Optional[str]) -> tuple[str, Path]:
    """-> (resolved name, the weights file in the Hugging Face cache), downloading it once when online."""
    from huggingface_hub import hf_hub_download
    resolved, repo = repo_of(spec, timm_name)
    offline = hub_offline()
    try:
        path = hf_hub_download(repo, "model.safetensors", cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                               local_files_only=offline)
    except Exception as e:  # not cached while offline, no network, no such repository or file
        why = "is not in the Hugging Face cache (HF_HUB_OFFLINE is set)" if offline else \
            f"could not be fetched ({first_line(e, 100)})"
        raise UserError(f"--pretrained {spec}: {repo}/model.safetensors {why}; fetch it once where the Hub is "
                        f"reachable: huggingface-cli download {repo} model.safetensors") from None
    return resolved, Path(path)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
