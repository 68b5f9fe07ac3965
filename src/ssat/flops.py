"""FLOPs from PyTorch's own counter (`torch.utils.flop_counter`), per image, for inference and a training step.

The counter knows the CUDA attention kernels but not the CPU one, so its formula is registered here (the same
count torch uses for the CUDA kernels: 4·N²·d per head forward, 2.5× that backward). Counts are of matmuls and
convolutions (2 FLOPs per multiply-add), the usual convention; elementwise ops are not counted."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _register_cpu_attention() -> None:
    fwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    bwd = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    try:
        if fwd is not None:
            register_flop_formula(fwd)(lambda q, k, v, *a, out_shape=None, **kw: sdpa_flop_count(q, k, v))
        if bwd is not None:
            register_flop_formula(bwd)(
                lambda g, q, k, v, *a, out_shape=None, **kw: sdpa_backward_flop_count(g, q, k, v))
    except ValueError:  # a future torch registers it itself
        pass


_register_cpu_attention()


def count_flops(fn) -> int:
    """FLOPs of everything `fn()` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def inference_flops_per_image(classifier: nn.Module, images: torch.Tensor) -> float:
    """Forward FLOPs of `classifier(images)` per image."""
    def forward():
        with torch.no_grad():
            classifier(images)
    was_training = classifier.training
    classifier.eval()
    try:
        return count_flops(forward) / images.shape[0]
    finally:
        classifier.train(was_training)


def train_flops_per_image(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                          aux_images=None) -> float:
    """Forward + backward FLOPs of one training step of `model(images, targets) -> StepOutput` per image (for SSAT:
    both streams and the decoder). Gradients are computed and then cleared."""
    def step():
        model(images, targets, aux_images).loss.backward()
    try:
        return count_flops(step) / images.shape[0]
    finally:
        model.zero_grad(set_to_none=True)
