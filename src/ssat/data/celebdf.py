"""Celeb-DF (v2) as released: `Celeb-real/`, `YouTube-real/`, `Celeb-synthesis/` and `List_of_testing_videos.txt`
(lines `<1 real | 0 fake> <folder>/<video>.mp4`). The listed videos are the test split (the zero-shot test of a
FaceForensics++ model); the others are the training split. Classes as FaceForensics++'s: real, fake."""

from __future__ import annotations

from pathlib import Path

from ssat.data.faceforensics import CLASSES
from ssat.data.registry import DataBundle, register_dataset
from ssat.data.video import VIDEO_MEAN, VIDEO_STD, Video, VideoOptions, is_video, load_splits
from ssat.errors import UserError

FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}
TEST_LIST = "List_of_testing_videos.txt"


def read_test_list(root: Path) -> list[Video]:
    path = root / TEST_LIST
    if not path.is_file():
        raise UserError(f"{path} is missing; --data-root must be the Celeb-DF-v2 folder holding {TEST_LIST}, "
                        f"{', '.join(FOLDERS)}")
    videos = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise UserError(f"{path} line {n} reads '{line.strip()[:60]}'; each line must be '<1 real | 0 fake> "
                            f"<folder>/<video>.mp4' as released")
        rel = parts[1]
        videos.append(Video(root / rel, 0 if parts[0] == "1" else 1, rel.rsplit(".", 1)[0]))
    return videos


@register_dataset("celebdf", "Celeb-DF v2 (real vs fake videos; the zero-shot test of a FaceForensics++ model)",
                  options=VideoOptions)
def load_celebdf(root, download, options) -> DataBundle:
    if download:
        raise UserError("Celeb-DF is released on request only (github.com/yuezunli/celeb-deepfakeforensics); pass "
                        "its folder as --data-root")
    if root is None:
        raise UserError("--dataset celebdf needs --data-root: the Celeb-DF-v2 folder")
    test = read_test_list(root)
    listed = {v.path.resolve() for v in test}
    train = [Video(p, label, p.relative_to(root).with_suffix("").as_posix())
             for folder, label in FOLDERS.items() if (root / folder).is_dir()
             for p in sorted((root / folder).iterdir()) if is_video(p) and p.resolve() not in listed]
    train_clips, test_clips = load_splits(root, options, train, test)
    return DataBundle("celebdf", train_clips, test_clips, train_clips.labels, CLASSES, 3, options.frame_size,
                      VIDEO_MEAN, VIDEO_STD, hflip=True, frames=options.frames, balanced=True)
