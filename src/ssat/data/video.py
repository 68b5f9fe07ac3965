"""Video data: decode (PyAV), sample clips, crop faces, cache the decoded clips on disk, hold them in memory.

Every video data set (faceforensics, celebdf, videofolder) lists its videos with their labels and calls
`load_clips`; the clips then take the in-memory path like small image sets (uint8 on the training device, batched
augmentation with one draw per clip for all its frames). A clip is decoded once: later epochs read memory, later
runs read the cache (`--clip-cache`), keyed on the file and every option that changes the pixels."""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ssat.data.files import refuse_outside
from ssat.errors import UserError, first_line, need_extra
from ssat.options import at_least, opt

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg"}
FACE_SCALE = 1.3  # the usual FaceForensics++ pre-processing: the detected box enlarged by 1.3


def is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


@dataclass
class VideoOptions:
    """Options every video data set takes (subclasses add their own)."""
    frames: int = opt(16, "frames per clip (video data sets; the video model is built for it)", "data",
                      check=at_least(1))
    frame_stride: int = opt(0, "frames between a clip's frames; 0: the clips' frames spread evenly over the video",
                            "data", check=at_least(0))
    clips_per_video: int = opt(1, "clips taken from each video (video-level scores average them)", "data",
                               check=at_least(1))
    frame_size: int = opt(112, "frames are resized (shorter side) and centre-cropped to this size once, when "
                               "decoded; --img-size then crops or resizes per batch", "data", check=at_least(1))
    face_crop: str = opt("none", "faces: none, boxes (from --face-boxes) or detect (OpenCV's Haar cascade), each "
                                 "box enlarged 1.3x and cropped square", "data", choices="none,boxes,detect")
    face_boxes: Optional[str] = opt(None, "JSON: video path relative to --data-root -> [x, y, w, h] for the whole "
                                          "video, or a list of one box per frame", "data")
    clip_cache: str = opt("~/.cache/ssat/clips", "folder for decoded clips (uint8 .npy), or 'none'", "data")

    @staticmethod
    def check(cfg) -> None:
        if (cfg.face_crop == "boxes") != (cfg.face_boxes is not None):
            raise UserError("--face-crop boxes and --face-boxes FILE go together; give both or neither")


@dataclass(frozen=True)
class Video:
    path: Path
    label: int
    video_id: str  # what video-level scores group by (e.g. 'Deepfakes/071_054')


class ClipDataset(Dataset):
    """Decoded clips as one uint8 array (N, T, H, W, C) with their labels and the video each came from."""

    def __init__(self, clips: np.ndarray, labels: Sequence[int], video_ids: Sequence[str]):
        if not len(clips) == len(labels) == len(video_ids):
            raise ValueError(f"{len(clips)} clips, {len(labels)} labels and {len(video_ids)} video ids")
        self.images = np.ascontiguousarray(clips, dtype=np.uint8)
        self.labels = [int(y) for y in labels]
        self.video_ids = list(video_ids)

    @classmethod
    def empty(cls, options) -> "ClipDataset":
        """A split the caller does not read (evaluation needs no training clips)."""
        shape = (0, options.frames, options.frame_size, options.frame_size, 3)
        return cls(np.zeros(shape, np.uint8), [], [])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


class BadVideo(Exception):
    """A video that cannot give the clips asked for; the message says why and what to do."""


def clip_indices(n: int, frames: int, stride: int, clips: int) -> list[list[int]]:
    """Frame indices of each clip of a video of `n` frames. Stride 0: `frames * clips` frames spread evenly over the
    video, cut into consecutive clips (FaceForensics++'s N frames per video). Stride s: clips of `frames` frames s
    apart, their starts spread evenly over the video."""
    if stride == 0:
        if n < frames * clips:  # fewer would repeat frames within and across clips, silently
            raise BadVideo(f"has {n} frames, fewer than the {frames * clips} that {clips} clip(s) of {frames} distinct "
                           f"frames need; lower --clips-per-video or --frames")
        picks = np.linspace(0, n - 1, frames * clips).round().astype(int).tolist()
        return [picks[i * frames:(i + 1) * frames] for i in range(clips)]
    span = (frames - 1) * stride + 1
    if n < span:
        raise BadVideo(f"has {n} frames, fewer than a clip of {frames} frames {stride} apart spans ({span}); lower "
                       f"--frames or --frame-stride")
    starts = np.linspace(0, n - span, clips).round().astype(int).tolist()
    return [[s + i * stride for i in range(frames)] for s in starts]


def decode_frames(path: Path, wanted: Callable[[int], list[list[int]]]) -> tuple[list[np.ndarray], list[int]]:
    """-> ((H, W, 3) uint8 RGB frames of `path`, their indices): the frames at `wanted(frame_count)` (clips,
    flattened), decoded sequentially, only those kept converted."""
    try:
        import av
    except ImportError:
        need_extra("av", "video", "reading videos")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise BadVideo("holds no video stream")
            stream = container.streams.video[0]
            n = stream.frames
            if n <= 0:  # no frame count in the container: count by decoding
                n = sum(1 for _ in container.decode(stream))
                container.seek(0)
            picks = [i for clip in wanted(n) for i in clip]
            need, out, got = set(picks), {}, 0
            for i, frame in enumerate(container.decode(stream)):
                got = i + 1
                if i in need:
                    out[i] = frame.to_ndarray(format="rgb24")
                if i >= max(picks):
                    break
    except BadVideo:
        raise
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:
        raise BadVideo(f"cannot be decoded ({first_line(e, 100)})") from None
    missing = [i for i in picks if i not in out]
    if missing:
        raise BadVideo(f"ends after {got} frames although it declares {n} (truncated?)")
    return [out[i] for i in picks], picks


def is_box(box) -> bool:
    """[x, y, w, h]: four finite numbers, width and height at least one pixel."""
    return isinstance(box, (list, tuple)) and len(box) == 4 and \
        all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box) and \
        box[2] >= 1 and box[3] >= 1


def square_box(box: Sequence[float], width: int, height: int, scale: float = FACE_SCALE) -> tuple[int, int, int]:
    """[x, y, w, h] -> (left, top, side) of the square of side scale * max(w, h) centred on it, kept in the frame.
    A box whose centre lies outside the frame would give a corner crop of something else: BadVideo."""
    x, y, w, h = (float(v) for v in box)
    if not (0 <= x + w / 2 <= width and 0 <= y + h / 2 <= height):
        raise BadVideo(f"has the box {list(box)} in --face-boxes, whose centre lies outside its {width}x{height} "
                       f"frames; fix the box (pixels, [x, y, w, h] from the top left)")
    side = int(round(min(max(w, h) * scale, width, height)))
    cx, cy = x + w / 2, y + h / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, max(side, 1)


class FaceDetector:
    """OpenCV's frontal-face Haar cascade (shipped inside the opencv wheel): the largest face of a frame."""

    def __init__(self):
        try:
            import cv2
        except ImportError:
            need_extra("cv2", "video", "--face-crop detect")
        if not hasattr(cv2, "CascadeClassifier"):
            raise UserError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them); "
                            f"pip install 'opencv-python-headless<5' or use --face-crop boxes")
        self.cv2 = cv2
        self.cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades,
                                                          "haarcascade_frontalface_default.xml"))

    def __call__(self, frame: np.ndarray) -> Optional[list[float]]:
        gray = self.cv2.cvtColor(frame, self.cv2.COLOR_RGB2GRAY)
        faces = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                              minSize=(max(8, min(gray.shape) // 10),) * 2)
        if len(faces) == 0:
            return None
        return [float(v) for v in max(faces, key=lambda f: f[2] * f[3])]


def resize_square(frames: np.ndarray, size: int) -> np.ndarray:
    """(T, H, W, C) uint8 -> (T, size, size, C): shorter side to `size` (bilinear, antialiased), centre crop."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    new = (max(size, round(h * size / min(h, w))), max(size, round(w * size / min(h, w))))
    x = F.interpolate(x, size=new, mode="bilinear", antialias=True, align_corners=False)
    top, left = (new[0] - size) // 2, (new[1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass(frozen=True)
class ClipRecipe:
    """Everything that decides a video's clips' pixels (and so the cache key)."""
    frames: int
    stride: int
    clips: int
    size: int
    face_crop: str

    @classmethod
    def of(cls, options) -> "ClipRecipe":
        return cls(options.frames, options.frame_stride, options.clips_per_video, options.frame_size,
                   options.face_crop)


def cache_path(cache: Optional[Path], video: Path, recipe: ClipRecipe, boxes) -> Optional[Path]:
    if cache is None:
        return None
    stat = video.stat()
    key = json.dumps([str(video.resolve()), stat.st_size, stat.st_mtime_ns, recipe.__dict__, boxes], default=str)
    return cache / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"


def read_cached(where: Path, recipe: ClipRecipe) -> Optional[np.ndarray]:
    """A cache entry, or None when it is not exactly what this recipe writes (empty, truncated, not .npy, a pickled
    object, another dtype or shape): a damaged entry is a miss, never wrapped values or a traceback."""
    try:
        clips = np.load(where, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    shape = (recipe.clips, recipe.frames, recipe.size, recipe.size, 3)
    if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.shape != shape:
        return None
    return clips


def read_clips(video: Path, recipe: ClipRecipe, boxes=None, detector: Optional[FaceDetector] = None) -> np.ndarray:
    """One video -> its clips (clips, frames, size, size, 3) uint8. `boxes`: one [x, y, w, h] for every frame or a
    list of one per frame of the video; `detector`: find the face in every kept frame (a frame without one takes the
    nearest earlier frame's box)."""
    frames, picks = decode_frames(video, lambda n: clip_indices(n, recipe.frames, recipe.stride, recipe.clips))
    if recipe.face_crop != "none":
        n = len(frames)
        if recipe.face_crop == "boxes":
            if boxes and isinstance(boxes[0], (list, tuple)):
                if max(picks) >= len(boxes):
                    raise BadVideo(f"has {len(boxes)} boxes in --face-boxes but frame {max(picks)} is used; give "
                                   f"one box per frame or one for the whole video")
                found = [boxes[i] for i in picks]
            else:
                found = [boxes] * n
        else:
            found = [detector(f) for f in frames]
            if all(b is None for b in found):
                raise BadVideo("shows no face the detector finds; use --face-crop boxes with your own boxes or "
                               "--face-crop none")
            first = next(b for b in found if b is not None)
            for i in range(n):  # frames without a face keep the previous face box
                found[i] = found[i] if found[i] is not None else (found[i - 1] if i else first)
        crops = []
        for frame, box in zip(frames, found):
            left, top, side = square_box(box, frame.shape[1], frame.shape[0])
            crops.append(resize_square(frame[None, top:top + side, left:left + side], recipe.size)[0])
        clip = np.stack(crops)
    else:
        clip = resize_square(np.stack(frames), recipe.size)
    return clip.reshape(recipe.clips, recipe.frames, recipe.size, recipe.size, 3)


def load_boxes(path: Optional[str], root: Path) -> dict:
    if path is None:
        return {}
    file = Path(path).expanduser()
    try:
        boxes = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"--face-boxes {file} cannot be read as JSON ({first_line(e, 80)}); give a JSON object "
                        f"mapping video paths relative to --data-root to [x, y, w, h]") from None
    if not isinstance(boxes, dict):
        raise UserError(f"--face-boxes {file} holds a {type(boxes).__name__}; it must map video paths relative to "
                        f"--data-root to [x, y, w, h] boxes")
    for video, box in boxes.items():
        per_frame = isinstance(box, list) and bool(box) and all(isinstance(b, list) for b in box)
        bad = next((b for b in (box if per_frame else [box]) if not is_box(b)), None)
        if bad is not None:
            raise UserError(f"--face-boxes {file}: the box {json.dumps(bad)[:60]} of {video} is not [x, y, w, h] "
                            f"(four numbers, w and h at least 1 pixel); fix it or give one box per frame as a list "
                            f"of such boxes")
    return boxes


def load_clips(videos: Sequence[Video], root: Path, options, split: str) -> ClipDataset:
    """Decode (or read from the cache) every video's clips. A video that cannot give them stops the run with one
    line naming it, or is skipped and logged under --on-bad-image skip."""
    recipe, log = ClipRecipe.of(options), options.log or (lambda msg: None)
    cache = None if options.clip_cache in ("none", "") else Path(options.clip_cache).expanduser()
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    boxes = load_boxes(options.face_boxes, root) if recipe.face_crop == "boxes" else {}
    detector = FaceDetector() if recipe.face_crop == "detect" else None

    def one(video: Video):
        rel = video.path.relative_to(root).as_posix() if video.path.is_relative_to(root) else str(video.path)
        try:
            if not video.path.is_file():
                raise BadVideo("is missing; restore it or remove it from the split")
            box = boxes.get(rel) if recipe.face_crop == "boxes" else None
            if recipe.face_crop == "boxes" and box is None:
                raise BadVideo(f"has no box in --face-boxes {options.face_boxes}; add one")
            where = cache_path(cache, video.path, recipe, box)
            if where is not None and where.is_file():
                cached = read_cached(where, recipe)
                if cached is not None:
                    return cached
                damaged.append(where)  # decoded again below and rewritten
            clips = read_clips(video.path, recipe, box, detector)
            if where is not None:  # written atomically: a killed run leaves no half file behind
                with tempfile.NamedTemporaryFile(dir=where.parent, suffix=".tmp", delete=False) as tmp:
                    np.save(tmp, clips)
                os.replace(tmp.name, where)
            return clips
        except BadVideo as e:
            return f"video {video.path} {e}"

    damaged: list[Path] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(one, videos))
    if damaged:
        log(f"clip cache: {len(damaged)} damaged entr{'y' if len(damaged) == 1 else 'ies'} (first {damaged[0]}) "
            f"decoded again and rewritten")
    clips, labels, ids, bad = [], [], [], []
    for video, result in zip(videos, results):
        if isinstance(result, str):
            bad.append(result)
            continue
        clips.append(result)
        labels += [video.label] * len(result)
        ids += [video.video_id] * len(result)
    if bad and options.on_bad_image != "skip":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{bad[0]}{more}; or pass --on-bad-image skip to leave such videos out")
    for message in bad:
        log(f"skipped: {message}")
    log(f"{split}: {len(ids)} clips of {recipe.frames} frames at {recipe.size} px from {len(videos) - len(bad)} "
        f"videos" + (f" ({len(bad)} skipped)" if bad else ""))
    return ClipDataset(np.concatenate(clips), labels, ids) if clips else ClipDataset.empty(options)


def load_splits(root: Path, options, train: Sequence[Video], test: Sequence[Video]) -> tuple[ClipDataset, ClipDataset]:
    """The (train, test) clips of a video set; a split the caller does not read (`options.splits`) stays empty.
    Videos that resolve outside --data-root (a split file's '../' or absolute id, a symlink) are refused unless
    --allow-outside-root, as for image files."""
    refuse_outside("video set", [v.path for v in (*train, *test)], root, options, "a split or link names")
    return tuple(load_clips(videos, root, options, part) if part in options.splits else ClipDataset.empty(options)
                 for part, videos in (("train", train), ("test", test)))


VIDEO_MEAN, VIDEO_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # VideoMAE normalises with ImageNet's
