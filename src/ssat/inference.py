"""A trained run's primary stream (encoder + head) on a test split or on image files: what `ssat eval` and
`ssat predict` run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssat import engine
from ssat.config import Config
from ssat.data.files import BAD_IMAGE_ERRORS, decode
from ssat.data.memory import MemoryLoader, resize_uint8, to_tensor
from ssat.data.perturb import Perturbed, name_of
from ssat.data.prepare import load_for
from ssat.data.transforms import Transformed, eval_transform
from ssat.engine import resolve_device, resolve_precision
from ssat.errors import UserError, first_line
from ssat.models import build_backbone
from ssat.runs import atomic_write_text, check_finite, load_trained


def load_classifier(checkpoint: str, device: torch.device):
    """-> (backbone in eval mode, its Config, its data metadata). Only encoder + head weights are loaded."""
    tensors, meta = load_trained(checkpoint)
    check_finite(tensors, f"checkpoint {checkpoint}", "its run diverged: use an earlier checkpoint or retrain with "
                                                      "a lower --lr")
    cfg = Config.from_dict(meta["config"], source=str(checkpoint))
    data = meta["data"]
    try:
        backbone = build_backbone(cfg.model, img_size=cfg.img_size, patch_size=cfg.patch_size,
                                  in_chans=data["in_chans"], num_classes=len(data["classes"]),
                                  global_pool=cfg.global_pool, pos_embed=cfg.pos_embed,
                                  frames=data.get("frames", 0), cfg=cfg)
    except UserError:
        raise
    except Exception as e:  # metadata that no ssat run writes (edited, or another version's): timm's own checks
        raise UserError(f"checkpoint {checkpoint}: its config cannot build model {cfg.model} ({type(e).__name__}: "
                        f"{first_line(e, 120)}); it was edited or not written by this version of ssat") from None
    try:
        backbone.encoder.load_state_dict(tensors)
    except RuntimeError as e:
        raise UserError(f"checkpoint {checkpoint} does not fit model {cfg.model} "
                        f"({str(e).splitlines()[1].strip()[:160] if len(str(e).splitlines()) > 1 else e}); "
                        f"it was not written by this version of ssat, retrain or re-export it") from None
    return backbone.to(device).eval(), cfg, data


def run_test_data(cfg: Config, dataset: Optional[str] = None, data_root: Optional[str] = None,
                  download: bool = False, overrides: Optional[dict] = None):
    """The data a trained run is evaluated on: its own set and options unless overridden (`overrides`: data set
    options such as DomainNet's domain or FaceForensics++'s manipulations). The run's data root applies only when
    evaluating on the data set it trained on."""
    name, root = test_source(cfg, dataset, data_root)
    data_cfg = dataclasses.replace(cfg, download=download, **(overrides or {})).validate()
    return name, load_for(data_cfg, name=name, root=root, splits=("test",))


def test_source(cfg: Config, dataset: Optional[str] = None, data_root: Optional[str] = None):
    """(data set, data root) a trained run is evaluated on: the run's root applies only to its own data set."""
    name = dataset or cfg.dataset
    return name, data_root if data_root is not None else (cfg.data_root if name == cfg.dataset else None)


def resolved_root(root: Optional[str]) -> Optional[str]:
    """A data root as recorded beside an evaluation: absolute, so that one evaluated elsewhere is told apart."""
    if root is None:
        return None
    path = Path(root).expanduser()
    return str(path.resolve()) if path.exists() else root  # a Hub id (hf) stays as it is


def evaluate_checkpoint(checkpoint: str, dataset: Optional[str] = None, data_root: Optional[str] = None,
                        download: bool = False, batch_size: int = 256, device: str = "auto",
                        workers: int = 0, perturb: Optional[str] = None, perturb_seed: int = 0,
                        **overrides) -> dict:
    """Accuracy of a trained model on a test split, clean or `perturb`ed (data/perturb.py), with AUC and video-level
    results on video sets. `overrides`: data set options given (e.g. domain=, manipulations=; None = the run's).
    Evaluating a run directory records every result in its summary.json: a perturbed one under "perturbed", any
    other under "evaluations" (keyed by data set and overrides: the cross-manipulation / zero-shot tables), each
    with the data root it read, so that an evaluation of other data is never taken for this one."""
    dev = resolve_device(device)
    model, cfg, meta = load_classifier(checkpoint, dev)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    name, root = test_source(cfg, dataset, data_root)
    data = run_test_data(cfg, dataset, data_root, download, overrides)[1]
    if data.num_classes != len(meta["classes"]):
        raise UserError(f"wrong class count: the checkpoint predicts {len(meta['classes'])} classes but {name} has "
                        f"{data.num_classes}; evaluate on a data set with the classes it was trained on")
    if data.in_chans != meta["in_chans"]:
        raise UserError(f"the checkpoint takes {meta['in_chans']}-channel images but {name} has "
                        f"{data.in_chans}; evaluate on a data set like the one it was trained on")
    if data.frames != meta.get("frames", 0):
        what = lambda n: f"clips of {n} frames" if n else "images"
        raise UserError(f"the checkpoint reads {what(meta.get('frames', 0))} but {name} holds {what(data.frames)}; "
                        f"evaluate on data like the one it was trained on")
    amp_dtype, _ = resolve_precision(cfg.precision, dev)
    if data.frames:  # clips: resized once, normalised in memory, scored per clip and per video
        if perturb:
            raise UserError("--perturb applies to images; evaluate video runs without it")
        clips = resize_uint8(to_tensor(data.test.images, data.in_chans), cfg.img_size)
        loader = MemoryLoader(clips, data.test.labels, batch_size=batch_size, device=dev, mean=meta["mean"],
                              std=meta["std"])
        result = {"checkpoint": str(checkpoint), "dataset": name, **overrides, "data_root": root,
                  **engine.evaluate(model, loader, device=dev, amp_dtype=amp_dtype, groups=data.test.video_ids)}
        _record(checkpoint, "evaluations", evaluation_key(name, overrides), result)
        return result
    test = Perturbed(data.test, perturb, perturb_seed) if perturb else data.test
    loader = DataLoader(Transformed(test, eval_transform(cfg, meta["mean"], meta["std"])),
                        batch_size=batch_size, num_workers=workers)
    result = {"checkpoint": str(checkpoint), "dataset": name, **overrides, "data_root": root,
              **engine.evaluate(model, loader, device=dev, amp_dtype=amp_dtype)}
    if not perturb:
        _record(checkpoint, "evaluations", evaluation_key(name, overrides), result)
        return result
    result["perturb"] = name_of(perturb)
    result["perturb_seed"] = perturb_seed
    if name == cfg.dataset and not overrides:
        _record(checkpoint, "perturbed", perturbed_key(perturb, perturb_seed), result)
    return result


def perturbed_key(perturb: str, seed: int = 0) -> str:
    """Where a perturbed evaluation is kept in summary.json's "perturbed": 'perspective:0.5', 'blur:1@seed2'."""
    return name_of(perturb) if seed == 0 else f"{name_of(perturb)}@seed{seed}"


def recorded(summary: dict, section: str, key: str, data_root: Optional[str]) -> bool:
    """Is this evaluation already in the run's summary, of the same data (root included)?"""
    entry = (summary.get(section) or {}).get(key)
    return isinstance(entry, dict) and entry.get("data_root") == resolved_root(data_root)


def evaluation_key(dataset: str, overrides: dict) -> str:
    """Where an evaluation is kept in summary.json's "evaluations": 'faceforensics:Face2Face', 'celebdf', ..."""
    return ":".join([dataset, *(str(overrides[k]) for k in sorted(overrides) if overrides[k] is not None)])


def _record(checkpoint: str, section: str, key: str, result: dict) -> None:
    """Keep an evaluation in the run's summary.json (when `checkpoint` is inside a run directory)."""
    summary = (Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent) / "summary.json"
    if summary.is_file():
        record = json.loads(summary.read_text())
        keep = ("acc1", "acc5", "loss", "n", "auc", "video_acc1", "video_auc", "n_videos")
        record.setdefault(section, {})[key] = {**{k: result[k] for k in keep if k in result},
                                               "data_root": resolved_root(result.get("data_root"))}
        atomic_write_text(summary, json.dumps(record, indent=2))


def read_image(path: str, in_chans: int) -> Image.Image:
    """Decoded exactly as training decodes files (16-bit rescaled, transparency on white), same errors."""
    if Path(path).is_dir():
        raise UserError(f"{path} is a folder; pass image files (e.g. {Path(path) / '*.png'}, which the shell "
                        f"expands)")
    if not Path(path).is_file():
        raise UserError(f"image {path} does not exist; pass paths of image files")
    try:
        return decode(Path(path), "L" if in_chans == 1 else "RGB")
    except BAD_IMAGE_ERRORS as e:
        raise UserError(f"{path} is not a readable image ({type(e).__name__}: {first_line(e, 120)}); pass a "
                        f"PNG/JPEG file") from None


@torch.inference_mode()
def predict(checkpoint: str, images: list[str], topk: int = 5, device: str = "auto") -> list[dict]:
    dev = resolve_device(device)
    model, cfg, meta = load_classifier(checkpoint, dev)
    if meta.get("frames"):
        raise UserError(f"{checkpoint} is a video model (clips of {meta['frames']} frames) and ssat predict reads "
                        f"image files; score videos with `ssat eval --checkpoint RUN --dataset videofolder`")
    transform = eval_transform(cfg, meta["mean"], meta["std"])
    batch = torch.stack([transform(read_image(p, meta["in_chans"])) for p in images]).to(dev)
    probs = model(batch).float().softmax(dim=1)
    top = probs.topk(min(topk, probs.shape[1]), dim=1)
    return [{"image": path, "top": [{"label": meta["classes"][i], "index": int(i), "prob": round(float(p), 4)}
                                    for p, i in zip(ps.tolist(), idx.tolist())]}
            for path, ps, idx in zip(images, top.values, top.indices)]
