"""Optimiser, schedule, one training epoch and evaluation. Nothing here knows about the CLI or run directories."""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from tqdm import tqdm

from ssat.distributed import SINGLE, World
from ssat.errors import UserError
from ssat.metrics import clip_and_video_metrics


class Diverged(UserError):
    """Training went non-finite; the caller keeps the last finite checkpoint and says how to resume."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but CUDA is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def resolve_precision(name: str, device: torch.device) -> tuple[Optional[torch.dtype], bool]:
    """-> (autocast dtype or None for fp32, whether a GradScaler is needed).

    'auto' is bf16 autocast on GPUs that do bf16 in hardware (Ampere on), fp16 + GradScaler (the reference's) on
    older ones, and fp32 on CPUs: CPU bf16 is faster, but short warm-ups stalled more often in it, too little
    evidence to change a default (docs/benchmarks.md)."""
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
        else:
            name = "fp32"
    return {"fp32": (None, False), "bf16": (torch.bfloat16, False), "fp16": (torch.float16, True)}[name]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device,
                    layer_decay: float = 1.0):
    """AdamW (fused); no weight decay on norms, biases (all 1-d parameters), position embeddings and tokens. With
    `layer_decay` < 1 (fine-tuning), the encoder's layer l of L trains at lr · decay^(L - l) (timm's groups; the
    scheduler applies each group's `lr_scale`)."""
    skip = model.no_weight_decay()
    if layer_decay < 1.0 and hasattr(model.backbone.encoder, "group_matcher"):
        prefix = "backbone.encoder."
        groups = param_groups_layer_decay(model.backbone.encoder, weight_decay, layer_decay=layer_decay,
                                          no_weight_decay_list=[k[len(prefix):] for k in skip if k.startswith(prefix)])
        rest = nn.ModuleDict({k: m for k, m in model.named_children() if k != "backbone"})
        groups += [g for g in param_groups_weight_decay(rest, weight_decay, no_weight_decay_list=skip) if g["params"]]
    else:
        groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    # The fused kernel updates every tensor in one pass: one launch on a GPU; on a CPU the update takes a quarter of
    # the default loop's time, a small but free gain (docs/benchmarks.md).
    return torch.optim.AdamW(groups, lr=lr, fused=device.type in ("cpu", "cuda"))


def build_scheduler(optimizer, *, epochs: int, warmup_epochs: float, updates_per_epoch: int, min_lr: float):
    """Per-update linear warm-up from 0, then half-cycle cosine to `min_lr` (the MAE/reference schedule)."""
    # timm warns that cosine "has no effect" when a short run is all warm-up; that is expected here.
    logging.getLogger("timm.scheduler.cosine_lr").setLevel(logging.ERROR)
    total = epochs * updates_per_epoch
    warmup = min(int(round(warmup_epochs * updates_per_epoch)), total - 1)
    return CosineLRScheduler(optimizer, t_initial=max(1, total - warmup), lr_min=min_lr, warmup_t=warmup,
                             warmup_lr_init=0.0, warmup_prefix=True, t_in_epochs=False)


def rescale_lr(optimizer, scheduler, factor: float) -> None:
    """Multiply the whole schedule (warm-up, peak, per-group scales; not the floor `min_lr`) by `factor`: a resumed
    run continues at the new learning rate where it left the old one's schedule."""
    for group in optimizer.param_groups:
        group["initial_lr"] *= factor
        group["lr"] *= factor
    scheduler.base_values = [v * factor for v in scheduler.base_values]
    if getattr(scheduler, "warmup_t", 0):
        scheduler.warmup_steps = [(v - scheduler.warmup_lr_init) / scheduler.warmup_t for v in scheduler.base_values]


def compile_model(model: nn.Module, mode: str = "default", deterministic: bool = False) -> nn.Module:
    """`torch.compile(model, mode=mode)`; 'reduce-overhead' also replays the step's kernels as CUDA graphs (on a
    GPU; a CPU compiles it as 'default'). The model's forward traces as one graph (tested), so nothing falls back
    to Python between kernels."""
    if deterministic:  # compiled kernels draw masks from torch's generator too, as in eager mode
        from torch._inductor import config as inductor_config
        inductor_config.fallback_random = True
    return torch.compile(model, mode=mode)


def all_finite(module: nn.Module) -> bool:
    """Are all parameters and buffers finite? (One host sync; run once per epoch, before a checkpoint.)"""
    tensors = [t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()]
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks=(1, 5)) -> list[torch.Tensor]:
    """Number of samples whose label is in the top-k, for each k (k capped at the class count)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    hits = top.eq(targets.unsqueeze(1))
    return [hits[:, :min(k, logits.shape[1])].any(dim=1).sum() for k in ks]


def _to(device, batch):
    return [t.to(device, non_blocking=True) for t in batch]


def split_backward(terms, params: list[torch.Tensor], scaler, divide: int) -> torch.Tensor:
    """Backward of `sum(terms) / divide` in one call per term, reading the shared parameters' gradient in between:
    -> [‖∇ term 0‖, ‖∇ rest‖, cos(∇ term 0, ∇ rest)] on `params` (unscaled; rest: the other terms together), then
    ‖∇ term i‖ for each further term when there are more than two. The same gradient as one call (up to summation
    order) for no extra compute; `params`' gradients must be empty (first micro-step)."""
    grads, before = [], [torch.zeros_like(p) for p in params]
    for i, term in enumerate(terms):
        scaler.scale(term / divide).backward(retain_graph=i + 1 < len(terms))
        now = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        grads.append(torch.cat([(g - b).float().flatten() for g, b in zip(now, before)]))
        before = now
    flat0, rest = grads[0], sum(grads[1:])
    # Norms of the terms themselves: undo the loss scale and the accumulation divisor (host sync only under fp16).
    scale = (scaler.get_scale() if scaler.is_enabled() else 1.0) / divide
    n0, n1 = flat0.norm(), rest.norm()
    cos = (flat0 @ rest) / (n0 * n1).clamp_min(1e-30)
    each = [g.norm() / scale for g in grads[1:]] if len(grads) > 2 else []
    return torch.stack([n0 / scale, n1 / scale, cos, *each])


@dataclass
class Updates:
    """How the weights are updated: the optimiser, its per-update lr schedule, the loss scaler, gradient
    accumulation and clipping; `total` updates over the whole run give the model's hooks their progress in [0, 1]
    (`set_progress` before an update, `after_step` after it; 0: not called); `ema` (--model-ema) follows the
    model's backbone after each update."""
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    accum_steps: int = 1
    clip_grad: Optional[float] = None
    total: int = 0
    ema: Any = None


@dataclass
class Placement:
    """Where a step runs: the device, the autocast dtype (None: fp32) and the process group."""
    device: torch.device
    amp_dtype: Optional[torch.dtype] = None
    world: World = SINGLE


class GradientProbe:
    """Every `every` updates, when the model returns two loss terms, the backward pass is split to measure each
    term's gradient on `params`: `grad_norm_primary`, `grad_norm_aux`, `grad_cos` (means over the probed updates)."""

    def __init__(self, params: list[torch.Tensor], every: int):
        self.params, self.every, self.count, self.sum = params, every, 0, None

    def due(self, out, micro_step: int, accum_steps: int, update_index: int, world: World) -> bool:
        return bool(self.every and self.params and out.terms is not None and micro_step % accum_steps == 0
                    and update_index % self.every == 0 and not world.distributed)

    def backward(self, out, scaler, accum_steps: int) -> None:
        stats = split_backward(out.terms, self.params, scaler, accum_steps)
        self.sum = stats if self.sum is None else self.sum + stats
        self.count += 1
        self.names = ("grad_norm_primary", "grad_norm_aux", "grad_cos",
                      *(f"grad_norm_{n}" for n in out.term_names[1:] if len(out.terms) > 2))

    def results(self) -> dict:
        if not self.count:
            return {}
        return dict(zip(self.names, (self.sum / self.count).tolist()))


@dataclass
class Watch:
    """What is observed during an epoch: the gradient probe, a step log (an object with `every` and
    `step(update, values)`, e.g. tracking.Tracker) and the progress bar."""
    probe: Optional[GradientProbe] = None
    log: Any = None
    bar: bool = False


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself under torch.compile and / or DistributedDataParallel wrappers: its hooks live there."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        inner = inner if isinstance(inner, nn.Module) else getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def train_one_epoch(model, loader, updates: Updates, epoch: int, *, place: Placement, mix: Optional[Callable] = None,
                    watch: Optional[Watch] = None) -> dict:
    """One pass over `loader`. `model` may be wrapped (DDP, torch.compile); the returned statistics are averaged over
    all images of all ranks. The only host synchronisations are the progress bar's (every 10 steps, when shown),
    the step log's (on its steps) and the final read-out."""
    model.train()
    hooks, watch = unwrap(model), watch or Watch()
    accum, world = updates.accum_steps, place.world
    updates_per_epoch = math.ceil(len(loader) / accum)
    sums: dict[str, torch.Tensor] = {}  # summed on device: no host sync inside the loop
    seen = 0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=not watch.bar, dynamic_ncols=True)
    updates.optimizer.zero_grad(set_to_none=True)
    for i, batch in enumerate(bar):
        images, targets, *aux_images = _to(place.device, batch)
        labels = targets  # accuracy is counted against the images' own labels
        if mix is not None:  # Mixup / CutMix: mixed images for both streams, mixed targets for the classifier
            images, targets = mix(images, targets)
        update_index = epoch * updates_per_epoch + i // accum
        if i % accum == 0:
            updates.scheduler.step_update(update_index)
            if updates.total:  # e.g. a scheduled λ
                hooks.set_progress(update_index / updates.total)

        update = (i + 1) % accum == 0 or i + 1 == len(loader)
        # Under DDP, gradients are all-reduced only on the micro-step that updates.
        with (nullcontext() if update or not hasattr(model, "no_sync") else model.no_sync()):
            with autocast(place.device, place.amp_dtype):
                out = model(images, targets, aux_images[0] if aux_images else None)
            if watch.probe is not None and watch.probe.due(out, i, accum, update_index, world):
                watch.probe.backward(out, updates.scaler, accum)
            else:
                updates.scaler.scale(out.loss / accum).backward()

        if update:
            if updates.clip_grad is not None:
                updates.scaler.unscale_(updates.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), updates.clip_grad)
            updates.scaler.step(updates.optimizer)
            updates.scaler.update()
            updates.optimizer.zero_grad(set_to_none=True)
            if updates.total:  # e.g. DINO's EMA teacher
                hooks.after_step((update_index + 1) / updates.total)
            if updates.ema is not None:
                updates.ema.update(hooks.backbone)
            if watch.log is not None and watch.log.every and (update_index + 1) % watch.log.every == 0:
                values = {"loss": out.loss.detach(), **out.parts}
                read = torch.stack([v.float() for v in values.values()]).tolist()  # one host sync
                watch.log.step(update_index + 1, {**dict(zip(values, read)),
                                                  "lr": updates.optimizer.param_groups[0]["lr"]})

        n = labels.shape[0]
        accuracy = {} if out.logits is None else dict(zip(("acc1", "acc5"), topk_correct(out.logits.detach(), labels)))
        for name, value in {"loss": out.loss.detach() * n, **accuracy,
                            **{k: v * n for k, v in out.parts.items()}}.items():
            sums[name] = sums.get(name, 0) + value.float()
        seen += n
        if watch.bar and i % 10 == 0:
            bar.set_postfix(loss=f"{out.loss.item():.4f}", lr=f"{updates.optimizer.param_groups[0]['lr']:.2e}")

    names = sorted(sums)
    totals = world.all_reduce_sum(torch.stack([sums[k] for k in names]
                                              + [torch.tensor(float(seen), device=place.device)]))
    totals = totals.tolist()
    stats = {k: v / totals[-1] for k, v in zip(names, totals)}
    if not math.isfinite(stats["loss"]):
        raise Diverged(f"the training loss is {stats['loss']} in epoch {epoch + 1}")
    for k in ("acc1", "acc5"):
        if k in stats:
            stats[k] *= 100
    if watch.probe is not None:
        stats.update(watch.probe.results())
    stats["lr"] = updates.optimizer.param_groups[0]["lr"]
    return stats


@torch.inference_mode()
def evaluate(classifier: nn.Module, loader, *, device: torch.device, amp_dtype: Optional[torch.dtype] = None,
             world: World = SINGLE, groups: Optional[Sequence[str]] = None) -> dict:
    """Top-1 / top-5 accuracy (%) and mean cross-entropy of `classifier(images) -> logits` over `loader` (under DDP:
    over every rank's share). Switches the classifier to eval mode (no drop-path); the training loop switches back.
    `groups`: the video of each item, in the loader's order (one process): adds AUC and video-level results."""
    classifier.eval()
    totals = torch.zeros(4, device=device, dtype=torch.float64)  # loss, correct@1, correct@5, seen
    probs, labels = [], []
    for images, targets, *_ in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            logits = classifier(images).float()
        if groups is not None:  # kept on the device; one transfer at the end
            probs.append(logits.softmax(-1))
            labels.append(targets)
        acc1, acc5 = topk_correct(logits, targets)
        loss = nn.functional.cross_entropy(logits, targets, reduction="sum")
        totals += torch.stack([loss.double(), acc1.double(), acc5.double(),
                               torch.tensor(targets.shape[0], device=device, dtype=torch.float64)])
    loss, correct1, correct5, seen = world.all_reduce_sum(totals).tolist()
    if seen == 0:
        raise UserError("the evaluation set is empty; check the data set's test/val split")
    result = {"acc1": 100 * correct1 / seen, "acc5": 100 * correct5 / seen, "loss": loss / seen, "n": int(seen)}
    if groups is not None and world.size == 1:
        result.update(clip_and_video_metrics(torch.cat(probs).cpu(), torch.cat(labels).cpu(), groups))
    return result
