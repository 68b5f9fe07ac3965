"""`ssat export RUN --to DIR`: a trained model as a timm model folder (config.json + model.safetensors), so that
`timm.create_model("local-dir:DIR", pretrained=True)` (or `hf-hub:USER/REPO` once pushed) rebuilds it with timm
alone. The export is checked by reloading it through timm and comparing logits with ssat's own model."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch

from ssat.errors import UserError, first_line, need_extra
from ssat.runs import SELECTED, WEIGHTS, load_trained


def export(run: str, to: str, best: bool = False) -> dict:
    path = Path(run)
    if path.is_dir():
        path = path / (SELECTED if best else WEIGHTS)
        if not path.is_file():
            raise UserError(f"{path} does not exist; " + ("the run has no validation split to select an epoch: drop "
                            "--best" if best else "the run has not finished (export needs its model.safetensors)"))
    tensors, meta = load_trained(path)
    spec = meta.get("timm")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise UserError(f"{path}: model {meta['config'].get('model')} has no timm equivalent (ssat's own module); "
                        f"share the run's model.safetensors, which `ssat eval` / `predict` read")
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    model = timm.create_model(spec["name"], pretrained=False, **kwargs)
    model.load_state_dict(tensors)
    data = meta["data"]
    size = kwargs.get("img_size", meta["config"].get("img_size"))
    data_config = {"input_size": (data["in_chans"], size, size), "mean": tuple(data["mean"]),
                   "std": tuple(data["std"]), "crop_pct": 1.0, "interpolation": "bicubic"}
    out = Path(to)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--to {out} is not empty; give a new or empty folder")
    timm.models.save_for_hf(model.eval(), str(out), model_config={"label_names": list(data["classes"])},
                            model_args=kwargs, safe_serialization=True, data_config=data_config)
    # The check: timm alone rebuilds the same function.
    reloaded = timm.create_model(f"local-dir:{out.resolve()}", pretrained=True).eval()
    x = torch.randn(2, data["in_chans"], size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = (reloaded(x) - model(x)).abs().max().item()
    if gap > 1e-5:
        raise UserError(f"the export in {out} does not reproduce the model's logits (max difference {gap:.2e}); "
                        f"report this with the run's config.yaml")
    return {"run": str(path), "to": str(out), "timm": spec["name"], "classes": len(data["classes"]),
            "max_logit_difference": gap}


def push(folder: str, repo: str, private: bool = False) -> str:
    """Upload an exported folder to the Hugging Face Hub (needs a token: `huggingface-cli login`)."""
    hub = need_extra("huggingface_hub", "hub", "--push-to-hub")
    try:
        api = hub.HfApi()
        api.create_repo(repo_id=repo, exist_ok=True, private=private)
        api.upload_folder(repo_id=repo, folder_path=folder, commit_message="ssat export")
    except Exception as e:  # no network, no token, no permission: one line
        raise UserError(f"--push-to-hub {repo}: {first_line(e)}; check `huggingface-cli login` and the network "
                        f"(the export itself is in {folder})") from None
    return f"hf-hub:{repo}"


def main(args) -> int:
    result = export(args.run, args.to, args.best)
    if args.push_to_hub:
        result["hub"] = push(args.to, args.push_to_hub, args.private)
    print(json.dumps(result))
    return 0
