"""FaceForensics++ as released: real videos `original_sequences/youtube/<c>/videos/NNN.mp4`, fakes
`manipulated_sequences/<Method>/<c>/videos/<target>_<source>.mp4`, splits `splits/{train,val,test}.json` (lists of
id pairs; a pair [a, b] gives the real videos a and b and the fakes a_b and b_a of every method). Classes: real,
fake; training samples both equally often (a run with all four methods has four fakes per real video). With
`--train-split train`, val.json's videos are loaded too and are the validation split: never trained on, and, unlike
a split carved from train.json, they share no face with the training videos."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ssat.data.registry import DataBundle, register_dataset
from ssat.data.video import VIDEO_MEAN, VIDEO_STD, Video, VideoOptions, load_splits
from ssat.errors import UserError, first_line
from ssat.options import opt

METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
COMPRESSIONS = ("raw", "c23", "c40")
CLASSES = ["real", "fake"]


@dataclass
class FaceForensicsOptions(VideoOptions):
    manipulations: str = opt(",".join(METHODS), "FaceForensics++ methods whose fakes are used, comma-separated "
                                                "(at evaluation: the cross-manipulation test)", "data",
                             at_eval="FaceForensics++ methods to test on, comma-separated (the cross-manipulation "
                                     "test) [default: the ones it was trained on]")
    compression: str = opt("c23", "FaceForensics++ compression: raw, c23 or c40", "data",
                           choices="raw,c23,c40")

    @staticmethod
    def check(cfg) -> None:  # VideoOptions' fields are checked by its own check (celebdf, videofolder register it)
        parse_manipulations(cfg.manipulations)
        if cfg.compression not in COMPRESSIONS:
            raise UserError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got '{cfg.compression}'")


def parse_manipulations(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if not names or unknown:
        raise UserError(f"--manipulations '{text}' names {'nothing' if not names else unknown[0]}; choose from "
                        f"{', '.join(METHODS)}, comma-separated")
    return names


def read_split(root: Path, split: str) -> list[tuple[str, str]]:
    path = root / "splits" / f"{split}.json"
    try:
        pairs = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"FaceForensics++ split file {path} cannot be read ({first_line(e, 80)}); --data-root "
                        f"must hold splits/{{train,val,test}}.json as released") from None
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise UserError(f"{path} is not a list of [target, source] id pairs, as the released split files are")
    if not pairs:
        raise UserError(f"{path} lists no videos; restore the released split file")
    return [(str(a), str(b)) for a, b in pairs]


def split_videos(root: Path, pairs, methods: list[str], compression: str) -> list[Video]:
    real = root / "original_sequences" / "youtube" / compression / "videos"
    videos = [Video(real / f"{i}.mp4", 0, f"real/{i}") for i in dict.fromkeys(i for pair in pairs for i in pair)]
    for method in methods:
        fake = root / "manipulated_sequences" / method / compression / "videos"
        videos += [Video(fake / f"{a}_{b}.mp4", 1, f"{method}/{a}_{b}") for x, y in pairs
                   for a, b in ((x, y), (y, x))]
    return videos


@register_dataset("faceforensics", "FaceForensics++ (real vs fake videos, released layout)",
                  options=FaceForensicsOptions)
def load_faceforensics(root, download, options) -> DataBundle:
    if download:
        raise UserError("FaceForensics++ is released on request only (github.com/ondyari/FaceForensics); download "
                        "it with its own script and pass its folder as --data-root")
    if root is None:
        raise UserError("--dataset faceforensics needs --data-root: the folder holding original_sequences/, "
                        "manipulated_sequences/ and splits/")
    methods = parse_manipulations(options.manipulations)
    videos = {s: split_videos(root, read_split(root, s), methods, options.compression)
              for s in ("train", "val", "test")}
    train, test = load_splits(root, options, videos["train"] + videos["val"], videos["test"])
    val_ids = {v.video_id for v in videos["val"]}
    # train+val: every video trains (a validation split is then carved); train: val.json is the validation split
    val = None if options.train_split == "train+val" else [i for i, v in enumerate(train.video_ids) if v in val_ids]
    return DataBundle("faceforensics", train, test, train.labels, CLASSES, 3,
                      options.frame_size, VIDEO_MEAN, VIDEO_STD, hflip=True, frames=options.frames, balanced=True,
                      val_indices=val)
