"""Tiny videos written with PyAV in the released FaceForensics++ / Celeb-DF layouts and a videofolder tree. Real and
fake clips differ by a learnable artefact, a different one per manipulation method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


def artefact(frame: np.ndarray, kind: str, t: int) -> np.ndarray:
    """A visible, method-specific change of a (H, W, 3) uint8 frame."""
    f = frame.astype(np.int16)
    h, w, _ = f.shape
    if kind == "Deepfakes":  # a bright blob in the centre
        f[h // 4:3 * h // 4, w // 4:3 * w // 4] += 90
    elif kind == "Face2Face":  # horizontal stripes
        f[::4] += 80
    elif kind == "FaceSwap":  # a red tint
        f[..., 0] += 100
    elif kind == "NeuralTextures":  # a flickering checkerboard
        yy, xx = np.mgrid[:h, :w]
        f += (((yy // 4 + xx // 4 + t) % 2) * 80)[..., None].astype(np.int16)
    return f.clip(0, 255).astype(np.uint8)


def write_video(path: Path, frames: int = 12, size: int = 32, kind: str = "real", seed: int = 0,
                face: bool = False) -> Path:
    """An mp4 of `frames` frames: smooth noise that drifts over time (+ the artefact of `kind`); with `face`, a
    dark oval "face" with eyes on a light background (what a Haar cascade may or may not find)."""
    import av
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (size // 8, size // 8, 3)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        for t in range(frames):
            frame = np.roll(base, t, axis=1)
            if kind != "real":
                frame = artefact(frame, kind, t)
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def faceforensics_tree(root: Path, pairs_per_split=(4, 2, 3), frames: int = 12, size: int = 32,
                       compression: str = "c23") -> Path:
    """root/original_sequences/youtube/<c>/videos/NNN.mp4, manipulated_sequences/<Method>/<c>/videos/A_B.mp4,
    splits/{train,val,test}.json, as released (ids zero-padded to three digits)."""
    ids = iter(range(1000))
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "val", "test"), pairs_per_split):
        pairs = [[f"{next(ids):03d}", f"{next(ids):03d}"] for _ in range(n)]
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
        for a, b in pairs:
            for i in (a, b):
                write_video(root / "original_sequences" / "youtube" / compression / "videos" / f"{i}.mp4", frames,
                            size, "real", seed=int(i))
            for m, method in enumerate(METHODS):
                for x, y in ((a, b), (b, a)):
                    write_video(root / "manipulated_sequences" / method / compression / "videos" / f"{x}_{y}.mp4",
                                frames, size, method, seed=int(x) * 7 + m)
    return root


def celebdf_tree(root: Path, n: int = 3, frames: int = 12, size: int = 32) -> Path:
    """root/{Celeb-real,YouTube-real,Celeb-synthesis}/*.mp4 and List_of_testing_videos.txt (1 = real, 0 = fake).
    Its fakes carry the Deepfakes artefact (a model trained on it should transfer)."""
    lines = []
    for folder, kind, label in (("Celeb-real", "real", 1), ("YouTube-real", "real", 1),
                                ("Celeb-synthesis", "Deepfakes", 0)):
        for i in range(n):
            write_video(root / folder / f"id{i}_{i:04d}.mp4", frames, size, kind, seed=500 + 10 * i + label)
            if i < n - 1:
                lines.append(f"{label} {folder}/id{i}_{i:04d}.mp4")
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")
    return root


def videofolder_tree(root: Path, per_class=(4, 2), frames: int = 12, size: int = 32) -> Path:
    for split, n in zip(("train", "val"), per_class):
        for c, kind in enumerate(("real", "FaceSwap", "Face2Face")):
            for i in range(n):
                write_video(root / split / f"class{c}" / f"clip{i}.mp4", frames, size, kind, seed=100 * c + i)
    return root
