"""`ssat export RUN --to DIR`: a trained model as a timm model folder (config.json + model.safetensors, a model
card README.md and the run's ssat-config.yaml), so that
`timm.create_model("local-dir:DIR", pretrained=True)` (or `hf-hub:USER/REPO` once pushed) rebuilds it with timm
alone. The export is checked by reloading it through timm and comparing logits with ssat's own model."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Optional

import timm
import torch
from safetensors import safe_open

from ssat.config import save_yaml
from ssat.data.transforms import eval_preprocessing
from ssat.errors import UserError, first_line, need_extra
from ssat.inference import load_classifier
from ssat.methods import METHODS
from ssat.modelcard import CONFIG_NAME, write_card
from ssat.runs import RunDir


def export(run: str, to: str, selected: bool = False, repo: Optional[str] = None, license: str = "unknown") -> dict:
    """The timm folder, with a model card (README.md, numbers from the run's summary.json) and the run's config;
    `repo`: the Hub repository it will be pushed to (named in the card's loading snippet)."""
    path = Path(run).expanduser()
    if path.is_dir():
        path = RunDir(path).selected_weights() if selected else RunDir(path).weights
        if not path.is_file():
            raise UserError(f"{path} does not exist; {_why_missing(path.parent, selected)}")
    # Built by ssat from the run's config and checked (finite weights, every key and shape): what predict runs.
    model, cfg, data = load_classifier(str(path), torch.device("cpu"))
    if not METHODS[cfg.method].primary:
        raise UserError(f"{path} is a {cfg.method} run: its classifier head was never trained, so an export would "
                        f"predict at random; fine-tune it (ssat train --method sslft --pretrained {run}) and export "
                        f"that run")
    name, kwargs = getattr(model, "timm_name", None), dict(getattr(model, "timm_kwargs", {}))
    if not name or not model.capabilities.timm_export:
        raise UserError(f"{path}: model {cfg.model} has no timm equivalent (ssat's own module); share the run's "
                        f"model.safetensors, which `ssat eval` / `predict` read")
    # Only what ssat itself writes reaches timm.create_model: the model's own arguments, never the file's.
    written = meta_timm(path)
    if written is not None and written != json.loads(json.dumps({"name": name, **kwargs})):
        raise UserError(f"{path}: its 'timm' metadata differs from what ssat writes for this run's config (edited?); "
                        f"re-export from the run directory, or retrain")
    size = kwargs.get("img_size", cfg.img_size)
    data_config = {"input_size": (data["in_chans"], size, size), "mean": tuple(data["mean"]),
                   "std": tuple(data["std"]), **eval_preprocessing(cfg)}
    out = Path(to).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--to {out} is not an empty folder; give a new or empty folder")
    timm_model = timm.create_model(name, pretrained=False, **kwargs).eval()
    timm_model.load_state_dict(model.encoder.state_dict())
    try:
        timm.models.save_for_hf(timm_model, str(out), model_config={"label_names": list(data["classes"])},
                                model_args=kwargs, safe_serialization=True, data_config=data_config)
    except OSError as e:
        raise UserError(f"--to {out}: cannot write the export ({e.strerror or first_line(e)}); choose a writable "
                        f"folder") from None
    # The check: timm alone rebuilds the same function as ssat's own model.
    reloaded = timm.create_model(f"local-dir:{out.resolve()}", pretrained=True).eval()
    x = torch.randn(2, data["in_chans"], size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gap = (reloaded(x) - model(x)).abs().max().item()
    if not math.isfinite(gap) or gap > 1e-5:
        raise UserError(f"the export in {out} does not reproduce the model's logits (max difference {gap:.2e}); "
                        f"do not use it, and report this with the run's config.yaml")
    # the run's config, less where its data and run folder were on this machine (a Hub id is kept)
    local_root = cfg.data_root and Path(cfg.data_root).expanduser().exists()
    save_yaml(dataclasses.replace(cfg, out=None, data_root=None if local_root else cfg.data_root), out / CONFIG_NAME)
    card = write_card(out, path, cfg, list(data["classes"]), data["in_chans"], selected, repo, license)
    return {"run": str(path), "to": str(out), "timm": name, "classes": len(data["classes"]), "card": str(card),
            "crop_pct": data_config["crop_pct"], "max_logit_difference": gap}


def meta_timm(path: Path):
    """The 'timm' entry of a model.safetensors' metadata (None for a checkpoint-last.pt, which has none); the header
    only: load_classifier has read and checked the file already."""
    if path.suffix != ".safetensors":
        return None
    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get("timm", "null"))


def _why_missing(run: Path, selected: bool) -> str:
    if not (run / "summary.json").is_file():
        return "the run has not finished yet; resume it (ssat train --resume RUN) and export it when it has"
    if selected:
        return "the run had no validation split to select an epoch (--val-fraction 0): export without --selected"
    return "the run directory is incomplete; export from a finished run"


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
    result = export(args.run, args.to, args.selected, args.push_to_hub, args.license)
    if args.push_to_hub:
        result["hub"] = push(args.to, args.push_to_hub, args.private)
    print(json.dumps(result))
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    ex = sub.add_parser("export", help="write a trained model as a timm model folder (config.json + safetensors)",
                        description="Export a run so that timm.create_model('local-dir:DIR', pretrained=True) "
                                    "rebuilds it with timm alone (checked by comparing logits); optionally push it "
                                    "to the Hugging Face Hub.")
    ex.add_argument("run", metavar="RUN", help="run directory (or its model.safetensors)")
    ex.add_argument("--to", required=True, help="new or empty folder to write")
    ex.add_argument("--selected", "--best", dest="selected", action="store_true",
                    help="export the validation-selected epoch (model-selected.safetensors; --best: its old name)")
    ex.add_argument("--push-to-hub", metavar="USER/REPO", help="also upload the folder to this Hub repository")
    ex.add_argument("--private", action="store_true", help="create the Hub repository as private")
    ex.add_argument("--license", default="unknown", help="the license the model card states (a Hub license id: "
                    "mit, apache-2.0, cc-by-4.0, other, ...) [default: unknown]")
    ex.set_defaults(handler=main)
