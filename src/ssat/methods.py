"""What each training method is: which streams it trains, what it needs and what it records. The one place a
method is asked about; everything else reads these specs instead of comparing method names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    primary: bool           # trains the classification stream (and has a test accuracy)
    auxiliary: bool         # trains the auxiliary (self-supervised) stream
    pretrained_init: bool   # fine-tunes an encoder another run pre-trained (--pretrained RUN or --pretrain-epochs)
    description: str
    baseline: bool = False  # what reports measure gains against

    @property
    def weighted(self) -> bool:
        """Both streams: the loss weighting (λ, balance, schedule) applies."""
        return self.primary and self.auxiliary


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("ssat", True, True, False, "primary + auxiliary loss, jointly (the method)"),
    Method("scratch", True, False, False, "primary loss only, from scratch (the baseline)", baseline=True),
    Method("sslft", True, False, True, "fine-tune a self-supervised pre-trained encoder (SSL+FT baseline)"),
    Method("pretrain", False, True, False, "auxiliary loss only, no labels (stage 1 of SSL+FT)"),
)}
