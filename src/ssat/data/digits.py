"""scikit-learn's bundled 8x8 handwritten digits (1,797 real images, 10 classes): the offline default.

How it is fed to a ViT: the native 8x8 grayscale image, scaled 0..16 -> 0..255, one input channel, patch
size 2 -> a 4x4 grid of 16 tokens (4 stay visible at mask ratio 0.75). No horizontal flip (it changes digits).
Split: a fixed stratified 80/20 train/test split (seed 0, independent of --seed), 1,437 / 360 images."""

from __future__ import annotations

import numpy as np

from ssat.data.registry import ArrayDataset, DataBundle, register_dataset

SPLIT_SEED = 0


@register_dataset("digits", "scikit-learn 8x8 digits, bundled (offline default)")
def load(root, download, options) -> DataBundle:
    # imported here: scikit-learn (with SciPy) adds about 2 s to every `ssat` command's start-up
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(int)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                           random_state=SPLIT_SEED)
    train_pixels = images[train_idx].astype(np.float64) / 255.0
    return DataBundle(
        name="digits",
        train=ArrayDataset(images[train_idx], labels[train_idx]),
        test=ArrayDataset(images[test_idx], labels[test_idx]),
        train_targets=labels[train_idx].tolist(),
        classes=[str(d) for d in range(10)],
        in_chans=1, native_size=8,
        mean=(float(train_pixels.mean()),), std=(float(train_pixels.std()),),
        hflip=False,
    )
