"""Looking inside trained models: Grad-CAM (pytorch-grad-cam) and class-token attention rollout side by side for
several checkpoints on the same test images, and MAE reconstructions (original / masked / reconstructed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssat.data.transforms import eval_transform
from ssat.engine import resolve_device
from ssat.errors import UserError, first_line, need_extra
from ssat.inference import load_classifier, run_test_data


def test_images(cfg, meta, n: int, dataset: Optional[str], data_root: Optional[str], seed: int = 0):
    """n test images (a seeded choice, the same for every model) as the model's input and as RGB for display."""
    _, data = run_test_data(cfg, dataset, data_root)
    picks = np.random.default_rng(seed).choice(len(data.test), size=min(n, len(data.test)), replace=False)
    transform = eval_transform(cfg, meta["mean"], meta["std"])
    images, labels = zip(*(data.test[int(i)] for i in picks))
    x = torch.stack([transform(im) for im in images])
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    rgb = (x * std + mean).clamp(0, 1)
    rgb = rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb
    return x, rgb.permute(0, 2, 3, 1).numpy(), list(labels), data.classes


def vit_reshape(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """ViT tokens (B, 1 + N, D) -> (B, D, h, w) for Grad-CAM; the class token is left out."""
    patches = tokens[:, -grid[0] * grid[1]:]
    return patches.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)


def grad_cam(model, x: torch.Tensor) -> np.ndarray:
    """(B, H, W) in [0, 1]: Grad-CAM of the predicted class at the last block's input norm."""
    GradCAM = need_extra("pytorch_grad_cam", "explain", "ssat gradcam").GradCAM
    enc = model.encoder
    if not model.capabilities.token_grid:
        raise UserError(f"Grad-CAM and attention rollout here read a ViT's patch tokens; {model.name} has none: "
                        f"pass a ViT run")
    with GradCAM(model=enc, target_layers=[enc.blocks[-1].norm1],
                 reshape_transform=lambda t: vit_reshape(t, model.grid_size)) as cam:
        return cam(input_tensor=x, targets=None)


@torch.no_grad()
def attention_rollout(model, x: torch.Tensor) -> np.ndarray:
    """(B, H, W): class-token attention rolled out over all blocks (Abnar & Zuidema), heads averaged, residual
    added. The maps are recomputed from each block's q and k (the training path uses fused SDPA, which does not
    return them)."""
    enc = model.encoder
    inputs = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append((m, a[0]))) for b in enc.blocks]
    try:
        enc(x)
    finally:
        for h in hooks:
            h.remove()
    b, n = x.shape[0], inputs[0][1].shape[1]
    rollout = torch.eye(n).expand(b, n, n)
    for attn, t in inputs:
        qkv = attn.qkv(t).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(qkv[0] @ qkv[1].transpose(-1, -2) * attn.scale, dim=-1).mean(dim=1)
        weights = weights + torch.eye(n)
        rollout = (weights / weights.sum(dim=-1, keepdim=True)) @ rollout
    cls_to_patches = rollout[:, 0, -model.num_patches:].reshape(b, *model.grid_size)
    maps = torch.nn.functional.interpolate(cls_to_patches.unsqueeze(1), size=x.shape[-2:], mode="bilinear")[:, 0]
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return ((maps - lo) / (hi - lo).clamp(min=1e-8)).numpy()


def _overlay(rgb: np.ndarray, heat: np.ndarray) -> np.ndarray:
    import matplotlib
    colored = matplotlib.colormaps["jet"](heat)[..., :3]
    return np.clip(0.55 * rgb + 0.45 * colored, 0.0, 1.0)  # rounding can overshoot 1 by an ulp


def gradcam_grid(checkpoints: list[str], out: str, n: int = 8, dataset: Optional[str] = None,
                 data_root: Optional[str] = None, device: str = "cpu") -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dev = resolve_device(device)
    models = [load_classifier(c, dev) for c in checkpoints]
    _, cfg0, meta0 = models[0]
    for path, (_, cfg, meta) in zip(checkpoints, models):
        if meta.get("frames"):
            raise UserError(f"{path} is a video model; Grad-CAM here draws images: look inside a video run with "
                            f"`ssat reconstruct --checkpoint {path}`")
        if cfg.img_size != cfg0.img_size:
            raise UserError(f"{path} reads {cfg.img_size} px images but {checkpoints[0]} reads {cfg0.img_size} px; "
                            f"compare runs trained at the same --img-size in one grid")
    x, rgb, labels, classes = test_images(cfg0, meta0, n, dataset, data_root)
    columns = [("image", [rgb[i] for i in range(len(rgb))], [classes[y] for y in labels])]
    for path, (model, _, meta) in zip(checkpoints, models):
        if meta["mean"] != meta0["mean"] or meta["in_chans"] != meta0["in_chans"]:
            raise UserError(f"{path} was trained on differently normalised inputs than {checkpoints[0]}; compare "
                            f"models trained on the same data")
        model.float().cpu()
        inputs = x.clone()
        with torch.no_grad():
            predicted = model(inputs).argmax(dim=1).tolist()
        cams, rollout = grad_cam(model, inputs), attention_rollout(model, inputs)
        name = Path(path).name or path
        titles = [f"{name}: {classes[p]}" for p in predicted]
        columns.append((f"Grad-CAM {name}", [_overlay(rgb[i], cams[i]) for i in range(len(rgb))], titles))
        columns.append((f"rollout {name}", [_overlay(rgb[i], rollout[i]) for i in range(len(rgb))], titles))
    rows, cols = len(rgb), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), dpi=80, squeeze=False)
    for c, (header, pictures, titles) in enumerate(columns):
        for r in range(rows):
            ax = axes[r][c]
            ax.imshow(pictures[r], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(titles[r] if c else f"label {titles[r]}", fontsize=7)
            if r == 0:
                ax.set_title(f"{header}\n{ax.get_title()}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, out)
    plt.close(fig)
    return {"out": str(out), "images": rows, "models": len(checkpoints)}


@torch.no_grad()
def reconstruct(checkpoint: str, out: str, n: int = 8, seed: int = 0) -> dict:
    """Original / masked / reconstructed (the visible parts pasted back), as the run's auxiliary task draws them:
    images, or for video runs the frames of up to 4 clips."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssat.config import Config
    from ssat.objective import build_model
    from ssat.runs import WEIGHTS_KEYS, load_checkpoint, resolve_checkpoint
    path = resolve_checkpoint(checkpoint, prefer="checkpoint-last.pt")
    if path.suffix != ".pt":
        raise UserError(f"{checkpoint}: reconstructions need the auxiliary task's decoder, kept in "
                        f"checkpoint-last.pt only; pass the run directory of an SSAT or pre-training run")
    state = load_checkpoint(path, need=WEIGHTS_KEYS)
    cfg = Config.from_dict(state["config"])
    meta = state["data"]
    model = build_model(cfg, num_classes=len(meta["classes"]), in_chans=meta["in_chans"],
                        frames=meta.get("frames", 0))
    if model.aux is None or not model.aux.reconstructs:
        raise UserError(f"{checkpoint} is a {cfg.method} run " + (f"whose auxiliary task {cfg.aux} " if model.aux
                        is not None else "without an auxiliary task, which ") + "draws no reconstruction; pass an "
                        "ssat / pretrain run of a masked-image task (mae, videomae)")
    model.load_state_dict(state["model"])
    model.eval()
    if meta.get("frames"):
        return _reconstruct_clips(model, cfg, meta, out, n, seed, plt)
    x, rgb, labels, classes = test_images(cfg, meta, n, None, None, seed)
    torch.manual_seed(seed)
    drawn = model.aux.reconstruct(model.backbone, x)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)

    def show(t):
        t = (t * std + mean).clamp(0, 1)
        t = t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t
        return t.permute(0, 2, 3, 1).numpy()
    panels = [("original", rgb), ("masked (75 %)" if cfg.mask_ratio == 0.75 else "masked", show(drawn.masked)),
              ("reconstruction", show(drawn.reconstruction))]
    fig, axes = plt.subplots(len(rgb), 3, figsize=(6, 2 * len(rgb)), dpi=80, squeeze=False)
    for c, (title, pictures) in enumerate(panels):
        for r in range(len(rgb)):
            axes[r][c].imshow(pictures[r], interpolation="nearest")
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    return {"out": str(out), "images": len(rgb), "masked_mse": round(drawn.masked_mse, 5)}


def _reconstruct_clips(model, cfg, meta: dict, out: str, n: int, seed: int, plt) -> dict:
    """Video runs: for each of up to 4 test clips, its frames as three rows (original / tube-masked /
    reconstructed, visible tubelets pasted back)."""
    from ssat.data.memory import resize_uint8, to_tensor
    _, data = run_test_data(cfg)
    clips = resize_uint8(to_tensor(data.test.images[:min(n, 4)], meta["in_chans"]), cfg.img_size)
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1, 1)
    x = (clips.float() / 255 - mean) / std
    torch.manual_seed(seed)
    drawn = model.aux.reconstruct(model.backbone, x)
    show = lambda v: (v * std + mean).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy()  # B, T, H, W, C
    panels = [show(x), show(drawn.masked), show(drawn.reconstruction)]
    shown = min(x.shape[2], 8)
    fig, axes = plt.subplots(3 * len(x), shown, figsize=(1.2 * shown, 3.6 * len(x)), dpi=80, squeeze=False)
    for c in range(len(x)):
        for r, (title, pictures) in enumerate(zip(("original", "masked", "reconstruction"), panels)):
            for f in range(shown):
                ax = axes[3 * c + r][f]
                ax.imshow(pictures[c, f], interpolation="nearest")
                ax.axis("off")
                if f == 0:
                    ax.set_title(f"clip {c}: {title}", fontsize=7, loc="left")
    fig.tight_layout()
    save_figure(fig, out)
    return {"out": str(out), "clips": len(x), "frames": shown, "masked_mse": round(drawn.masked_mse, 5)}


FIGURE_TYPES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")


def check_figure_path(out: str) -> None:
    """Refuse an --out matplotlib cannot write (x.txt, a folder) before any work is done."""
    path = Path(out).expanduser()
    if path.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name such as {path / 'figure.png'}")
    if path.suffix.lower() not in FIGURE_TYPES:
        raise UserError(f"--out {out}: a figure is written as {', '.join(FIGURE_TYPES)}; give a file name ending "
                        f"in one of them (e.g. {path.with_suffix('.png').name})")


def save_figure(fig, out: str) -> None:
    import matplotlib.pyplot as plt
    path = Path(out).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write the figure ({e.strerror or first_line(e)}); choose a writable "
                        f"path") from None
    finally:
        plt.close(fig)


def _check_n(n: int) -> None:
    if n < 1:
        raise UserError(f"--n must be at least 1 (images to draw), got {n}")


def main_gradcam(args) -> int:
    _check_n(args.n)
    check_figure_path(args.out)
    need_extra("pytorch_grad_cam", "explain", "ssat gradcam")
    need_extra("matplotlib", "explain", "ssat gradcam")
    print(json.dumps(gradcam_grid(args.checkpoint, args.out, args.n, args.dataset, args.data_root, args.device)))
    return 0


def main_reconstruct(args) -> int:
    _check_n(args.n)
    check_figure_path(args.out)
    need_extra("matplotlib", "report", "ssat reconstruct")
    print(json.dumps(reconstruct(args.checkpoint, args.out, args.n, args.seed)))
    return 0


def add_parsers(sub) -> None:
    """This command's parser (cli.py lists the commands; each owns its flags)."""
    gc = sub.add_parser("gradcam", help="Grad-CAM and attention-rollout grid: test images x models",
                        description="For the same seeded test images, each model's Grad-CAM (pytorch-grad-cam, "
                                    "class token left out) and class-token attention rollout, side by side.")
    gc.add_argument("--checkpoint", action="append", required=True, help="run directory (repeat to compare)")
    gc.add_argument("--dataset", help="data set [default: the first model's]")
    gc.add_argument("--data-root", help="its files [default: the first model's]")
    gc.add_argument("--n", type=int, default=8, help="test images [default: 8]")
    gc.add_argument("--out", default="gradcam.png", help="PNG to write [default: gradcam.png]")
    gc.add_argument("--device", default="cpu", help="[default: cpu]")

    rc = sub.add_parser("reconstruct", help="original / masked / reconstructed grid of an SSAT (MAE) run",
                        description="Mask test images as in training and draw the MAE decoder's reconstruction.")
    rc.add_argument("--checkpoint", required=True, help="run directory of an ssat or pretrain run with --aux mae")
    rc.add_argument("--n", type=int, default=8, help="test images [default: 8]")
    rc.add_argument("--seed", type=int, default=0, help="seed of the images and masks [default: 0]")
    rc.add_argument("--out", default="reconstruction.png", help="PNG to write [default: reconstruction.png]")
    gc.set_defaults(handler=main_gradcam)
    rc.set_defaults(handler=main_reconstruct)
