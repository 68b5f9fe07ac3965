"""The weights file a run writes (model.safetensors, model-selected.safetensors): the encoder and head in timm key
names, with the run's config and data (classes, channels, normalisation) as JSON metadata. One reader, used by the
run directory (runs.load_trained) and by parts that read another run's weights (a guidance teacher)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ssat.errors import UserError


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """-> (tensors, metadata with 'config' and 'data'), or one line saying why the file is not one of ours."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        tensors = load_file(str(path))
    except Exception as e:  # any failure to parse means the file is not ours or is damaged
        raise UserError(f"{path} is not a readable safetensors file ({e}); re-export it with `ssat train`") from None
    if "config" not in meta or "data" not in meta:
        raise UserError(f"{path} has no ssat metadata (config, data); pass a model.safetensors written by "
                        f"`ssat train`")
    data = meta["data"]
    if not isinstance(meta["config"], dict) or not isinstance(data, dict) or \
            not isinstance(data.get("classes"), list) or not isinstance(data.get("in_chans"), int) or \
            not all(isinstance(data.get(k), list) for k in ("mean", "std")):
        raise UserError(f"{path}: its ssat metadata is malformed (config must be a mapping; data must hold "
                        f"classes, in_chans, mean and std); re-export it with `ssat train`")
    return tensors, meta
