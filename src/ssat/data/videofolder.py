"""Folders of videos by class, UCF101 / HMDB51 style: `root/train/<class>/<clip>.mp4`, `root/val/<class>/...`
(or `test/`); any class count."""

from __future__ import annotations

from ssat.data.imagefolder import scan_classes
from ssat.data.registry import DataBundle, register_dataset
from ssat.data.video import VIDEO_MEAN, VIDEO_STD, Video, VideoOptions, is_video, load_splits
from ssat.errors import UserError


@register_dataset("videofolder", "folders of videos by class: <root>/{train,val}/<class>/<clip>.mp4",
                  options=VideoOptions)
def load_videofolder(root, download, options) -> DataBundle:
    if root is None:
        raise UserError("--dataset videofolder needs --data-root: the folder holding train/ and val/ (or test/)")
    test_dir = next((root / v for v in ("val", "test") if (root / v).is_dir()), root / "val")
    classes, train_paths, train_labels = scan_classes(root / "train", "train", keep=is_video, what="video")
    test_classes, test_paths, test_labels = scan_classes(test_dir, test_dir.name, keep=is_video, what="video")
    if test_classes != classes:
        raise UserError(f"{test_dir} has classes {test_classes[:5]} but train/ has {classes[:5]}; both splits need "
                        f"the same class folders")
    listed = lambda paths, labels: [Video(p, y, p.relative_to(root).with_suffix("").as_posix())
                                    for p, y in zip(paths, labels)]
    train, test = load_splits(root, options, listed(train_paths, train_labels), listed(test_paths, test_labels))
    return DataBundle("videofolder", train, test, train.labels, classes, 3,
                      options.frame_size, VIDEO_MEAN, VIDEO_STD, hflip=True, frames=options.frames)
