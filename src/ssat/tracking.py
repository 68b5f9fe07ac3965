"""Following a run while it trains: a progress line every --log-every steps where stderr is not a terminal
(nohup, batch schedulers: no progress bar there), and the same scalars in TensorBoard or Weights & Biases."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ssat.errors import need_extra


class Tracker:
    def __init__(self, cfg, run_dir: Path, is_main: bool, updates_per_epoch: int):
        self.every = cfg.log_every if is_main else 0
        self.lines = is_main and not cfg.quiet and not sys.stderr.isatty()
        self.total = cfg.epochs * updates_per_epoch
        self.writer, self.wandb = None, None
        if is_main and cfg.log == "tensorboard":
            need_extra("tensorboard", "tensorboard", "--log tensorboard")
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(run_dir / "tb"))
        if is_main and cfg.log == "wandb":
            wandb = need_extra("wandb", "wandb", "--log wandb")
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "ssat"), name=run_dir.name,
                                    dir=str(run_dir), config=cfg.to_dict(),
                                    mode=os.environ.get("WANDB_MODE", "offline"))

    def step(self, update: int, values: dict) -> None:
        if self.lines:
            parts = "  ".join(f"{k} {v:.4g}" for k, v in values.items())
            print(f"step {update}/{self.total}  {parts}", file=sys.stderr, flush=True)
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"train/{k}", v, update)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=update)

    def epoch(self, epoch: int, row: dict, update: int) -> None:
        scalars = {f"{k.split('_', 1)[0] if k.startswith(('val_', 'test_', 'train_')) else 'epoch'}/{k}": v
                   for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self.writer is not None:
            for k, v in scalars.items():
                self.writer.add_scalar(k, v, epoch)
            self.writer.flush()
        if self.wandb is not None:  # one step axis in W&B: the update count at the epoch's end
            self.wandb.log({**scalars, "epoch": epoch}, step=update)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()

    @property
    def logs_steps(self) -> bool:
        """Do per-step values go anywhere (a progress line, TensorBoard, W&B)? The engine reads them only then."""
        return bool((self.lines or self.writer is not None or self.wandb is not None) and self.every)
