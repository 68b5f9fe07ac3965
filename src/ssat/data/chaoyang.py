"""Chaoyang (colorectal pathology, 4 classes) in its release layout: the image folder(s) plus `train.json` and
`test.json`, each a list of `{"name": "<path relative to the root>", "label": k}`."""

from __future__ import annotations

import json

from ssat.data.files import FileImageDataset, check_files, file_bundle
from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, register_dataset
from ssat.errors import UserError

CLASSES = ["normal", "serrated", "adenocarcinoma", "adenoma"]


def _split(root, split: str) -> FileImageDataset:
    path = root / f"{split}.json"
    if not path.is_file():
        raise UserError(f"Chaoyang split file {path} not found; set --data-root to the release folder holding "
                        f"train.json, test.json and the images")
    try:
        entries = json.loads(path.read_text(encoding="utf-8-sig"))
        if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("name"), str)
                                                    for e in entries):
            raise ValueError("expected a list of objects with a string 'name'")
        paths = [root / e["name"] for e in entries]
        labels = [e["label"] for e in entries]
        bad = next((y for y in labels if isinstance(y, bool) or not isinstance(y, int)), None)
        if bad is not None:  # 0.7 or "1" must not quietly become a class
            raise ValueError(f"label {bad!r} is not an integer class index")
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path} is not a list of {{\"name\": ..., \"label\": ...}} entries ({e}); "
                        f"restore the released file") from None
    check_files(paths, str(path))
    return FileImageDataset(paths, labels)


@register_dataset("chaoyang", "Chaoyang pathology, release layout (images + train.json / test.json), 4 classes")
def load(root, download, options):
    if download:
        raise UserError("Chaoyang is distributed on request by its authors and cannot be downloaded here; "
                        "put the release in --data-root")
    if root is None:
        raise UserError("--dataset chaoyang needs --data-root: the folder holding train.json and test.json")
    return file_bundle("chaoyang", _split(root, "train"), _split(root, "test"), CLASSES, options,
                       IMAGENET_MEAN, IMAGENET_STD, root=root)
