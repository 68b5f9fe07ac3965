"""Scores beyond top-k accuracy: ROC AUC for two-class tasks and video-level results (the mean of a video's clip
probabilities), as deepfake detection reports them (frame/clip level and video level)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for the positive labels (1); None when one class is absent."""
    if labels.min(initial=1) == labels.max(initial=0):
        return None
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels, scores))


def clip_and_video_metrics(probs: torch.Tensor, targets: torch.Tensor, groups: Sequence[str]) -> dict:
    """(N, K) class probabilities of N clips, their labels and the video each came from -> clip AUC (two classes),
    video-level top-1 (%) and AUC of the videos' mean probabilities. AUCs are in [0, 1], the positive class is 1
    (fake in FaceForensics++ / Celeb-DF)."""
    p, y = probs.double().numpy(), targets.numpy()
    if len(groups) != len(y):
        raise ValueError(f"{len(groups)} video ids for {len(y)} clips")
    names, index = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    video_p = np.zeros((len(names), p.shape[1]))
    np.add.at(video_p, index, p)
    video_p /= np.bincount(index, minlength=len(names))[:, None]
    video_y = np.zeros(len(names), dtype=int)
    video_y[index] = y
    out = {"video_acc1": float(100 * (video_p.argmax(1) == video_y).mean()), "n_videos": int(len(names))}
    if p.shape[1] == 2:
        out["auc"] = roc_auc(p[:, 1], y)
        out["video_auc"] = roc_auc(video_p[:, 1], video_y)
    return out
