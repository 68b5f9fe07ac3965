"""Hugging Face `datasets` sets (`--dataset hf`, extra `ssat[hf]`): `--data-root` is a `save_to_disk` folder, a
folder in the Hub's layout (`data/train-*.parquet`, ...; whatever `datasets.load_dataset(folder)` reads) or a Hub id
`user/name`, read from the Hugging Face cache (`--download` fetches it there once; HF_HUB_OFFLINE=1 never fetches).

Images are the column with an `Image` feature and labels the `ClassLabel` column unless `--hf-image-column` /
`--hf-label-column` say otherwise; the bytes are decoded by the same decoder as image files (16-bit, alpha,
grayscale). A set whose images all have one size is decoded once into memory (the in-memory path); others are
decoded per item. A Hub id's revision is pinned in config.yaml (`hf_revision`), so a rerun reads the same data."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from torch.utils.data import Dataset

from ssat.data.files import BAD_IMAGE_ERRORS, decode
from ssat.data.memory import MAX_BYTES
from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, ArrayDataset, DataBundle, array_stats, register_dataset
from ssat.errors import UserError, first_line
from ssat.hubweights import hub_offline
from ssat.options import opt

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # user/name (not ./x, /x or a deeper path)
GRAY_MODES = ("1", "L", "LA", "I", "F", "I;16", "I;16B", "I;16L")


@dataclass(frozen=True)
class HFOptions:
    hf_image_column: Optional[str] = opt(None, "hf: the image column [default: the one with an Image feature]",
                                         "data")
    hf_label_column: Optional[str] = opt(None, "hf: the label column [default: the one with a ClassLabel feature, "
                                               "else 'label']", "data")
    hf_train_split: str = opt("train", "hf: the split to train on ('train+validation' joins splits)", "data")
    hf_test_split: Optional[str] = opt(None, "hf: the split to test on [default: test, or validation when there is "
                                             "no test split]", "data",
                                       at_eval="hf: the split to evaluate on [default: the one it was tested on]")
    hf_config: Optional[str] = opt(None, "hf: the data set's configuration (subset) name [default: its default]",
                                   "data")
    hf_revision: Optional[str] = opt(None, "hf: the Hub commit to read [default: the cached / latest one; the run "
                                           "records the one it read]", "data")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise UserError("--dataset hf needs the datasets package: pip install 'ssat[hf]'") from None
    return datasets


def _hub_snapshot(repo: str, revision: Optional[str], download: bool) -> Path:
    """The Hub data set's files in the Hugging Face cache (fetched there with --download)."""
    from huggingface_hub import snapshot_download
    offline = hub_offline()
    fetch = (f"add --download to fetch it (or `huggingface-cli download --repo-type dataset {repo}`)"
             if not offline else f"unset HF_HUB_OFFLINE and add --download, or run `huggingface-cli download "
                                 f"--repo-type dataset {repo}` where the Hub is reachable")
    try:
        return Path(snapshot_download(repo, repo_type="dataset", revision=revision,
                                      cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                      local_files_only=offline or not download))
    except Exception as e:  # not cached, no network, no such repository or revision
        at = f" at revision {revision}" if revision else ""
        if offline or not download:
            raise UserError(f"--data-root {repo}: no such folder, and the Hub data set {repo}{at} is not in the "
                            f"Hugging Face cache; {fetch}") from None
        raise UserError(f"--data-root {repo}: the Hub data set{at} could not be fetched ({first_line(e, 100)}); "
                        f"check the name and the network") from None


def _open(root: Path, options, download: bool):
    """-> (DatasetDict, source, pinned options): the splits, where they came from, the revision read."""
    ds = _datasets()
    pinned, source = {}, None
    if not root.exists():
        if not HUB_ID.match(str(root)):
            raise UserError(f"--data-root {root} is neither a folder nor a Hub id (user/name); point it at a "
                            f"save_to_disk folder, a folder of parquet files (data/train-*.parquet) or a Hub id")
        folder = _hub_snapshot(str(root), options.hf_revision, download)
        pinned["hf_revision"] = folder.name  # the snapshot folder is named by its commit
        source = f"hf-hub:{root}@{folder.name}"
    else:
        folder, source = root, str(root.resolve())
    bars_were_on = ds.is_progress_bar_enabled()
    ds.disable_progress_bars()  # "Generating train split" bars: ssat's own log line says what was read
    try:
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            splits = ds.load_from_disk(str(folder))
            if options.hf_config:
                raise UserError(f"--hf-config {options.hf_config}: {folder} is a save_to_disk folder, which holds "
                                f"one configuration; leave --hf-config out")
        else:
            splits = ds.load_dataset(str(folder), name=options.hf_config)
    except UserError:
        raise
    except Exception as e:
        empty = _empty_split(folder, e)
        if empty:
            raise UserError(f"split '{empty}' of the data set has no rows; pass --hf-train-split / --hf-test-split "
                            f"naming a split with data, or fill it") from None
        raise UserError(f"--data-root {root}: not a data set `datasets` can read ({type(e).__name__}: "
                        f"{first_line(e, 140)}); use a save_to_disk folder or the Hub's parquet layout") from None
    finally:
        if bars_were_on:
            ds.enable_progress_bars()
    if not isinstance(splits, ds.DatasetDict):
        raise UserError(f"{folder} holds one split without a name; save a DatasetDict "
                        f"(DatasetDict(train=..., test=...).save_to_disk(...))")
    return splits, source, pinned


def _empty_split(folder: Path, e: Exception) -> Optional[str]:
    """The split `datasets` failed on for having no rows (it cannot load one from either layout), if that was it."""
    found = re.search(r'Instruction "([^"]+)" corresponds to no data', str(e))
    if found:
        return found.group(1)
    try:
        names = json.loads((folder / "dataset_dict.json").read_text())["splits"]
        return next((n for n in names
                     if not json.loads((folder / n / "state.json").read_text()).get("_data_files")), None)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _split(splits, name: str, flag: str):
    ds = _datasets()
    parts = []
    for part in name.split("+"):
        if part not in splits:
            raise UserError(f"{flag} {name}: the data set has no split '{part}' (it has {', '.join(splits)}); "
                            f"pass {flag} naming one of them")
        parts.append(splits[part])
    split = parts[0] if len(parts) == 1 else ds.concatenate_datasets(parts)
    if len(split) == 0:
        raise UserError(f"split '{name}' of the data set has no rows; pass {flag} naming a split with data")
    return split


def _find_column(split, given: Optional[str], flag: str, feature_type, what: str,
                 fallback: Optional[str] = None) -> str:
    """The column `given`, else the one column whose feature is a `feature_type` (else `fallback`, if present)."""
    features = split.features
    if given:
        if given not in features:
            raise UserError(f"{flag} {given}: no such column (columns: {', '.join(features)})")
        return given
    found = [c for c, f in features.items() if isinstance(f, feature_type)]
    if len(found) == 1:
        return found[0]
    if not found and fallback in features:
        return fallback
    how = "no column has" if not found else f"{len(found)} columns ({', '.join(found)}) have"
    named = f" and none is named '{fallback}'" if fallback and not found else ""
    raise UserError(f"{how} {what} feature{named} (columns: {', '.join(features)}); pass {flag}")


def _image_column(split, options) -> str:
    ds = _datasets()
    name = _find_column(split, options.hf_image_column, "--hf-image-column", ds.Image, "an Image")
    feature = split.features[name]
    if not (isinstance(feature, ds.Image) or (isinstance(feature, dict) and {"bytes", "path"} <= set(feature))):
        raise UserError(f"column '{name}' holds {type(feature).__name__} values, not images; pass "
                        f"--hf-image-column naming the column with an Image feature")
    return name


def _label_column(split, options) -> tuple[str, Optional[list[str]]]:
    """-> (column, class names from its ClassLabel, or None for plain integers)."""
    ds = _datasets()
    name = _find_column(split, options.hf_label_column, "--hf-label-column", ds.ClassLabel, "a ClassLabel", "label")
    feature = split.features[name]
    if isinstance(feature, ds.ClassLabel):
        return name, list(feature.names)
    if isinstance(feature, ds.Value) and feature.dtype.startswith(("int", "uint")):
        return name, None
    what = feature.dtype if isinstance(feature, ds.Value) else type(feature).__name__
    raise UserError(f"label column '{name}' holds {what} values, not integer or ClassLabel labels; encode it "
                    f"(dataset.class_encode_column('{name}')) or pass --hf-label-column")


def _labels(split, column: str, split_name: str, classes: list[str], index: Optional[dict]) -> list[int]:
    raw = split[column]  # a label column is small (one integer a row)
    if index is not None:  # plain integers: mapped to the training split's sorted values
        bad = next((r for r, y in enumerate(raw) if y not in index), None)
        if bad is not None:
            raise UserError(f"split '{split_name}' row {bad}: label {raw[bad]} does not occur in the training "
                            f"split; every test class needs training images")
        return [index[y] for y in raw]
    bad = next((r for r, y in enumerate(raw) if y is None or not 0 <= y < len(classes)), None)
    if bad is not None:
        raise UserError(f"split '{split_name}' row {bad}: label {raw[bad]} is not one of the {len(classes)} "
                        f"classes (-1 / None: unlabelled); choose a labelled split with --hf-train-split / "
                        f"--hf-test-split")
    return [int(y) for y in raw]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _source(cell: dict):
    return io.BytesIO(cell["bytes"]) if cell.get("bytes") else cell.get("path")


class HFImages(Dataset):
    """(image, label) items of one split, decoded per item (sets of several image sizes)."""

    def __init__(self, split, column: str, labels: list[int], mode: str, name: str, rows: Optional[list] = None):
        self.split, self.column, self.labels, self.mode, self.name = split, column, labels, mode, name
        self.rows = list(range(len(labels))) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        try:
            return decode(_source(self.split[row][self.column]), self.mode), self.labels[i]
        except BAD_IMAGE_ERRORS as e:
            raise bad_row(self.name, self.column, row, e) from None


def bad_row(split: str, column: str, row: int, e: Exception) -> UserError:
    return UserError(f"split '{split}' row {row}: column '{column}' is not a readable image ({type(e).__name__}: "
                     f"{first_line(e, 100)}); fix the row, or pass --on-bad-image skip to leave it out")


def _scan(split, column: str, name: str, on_bad: str, log) -> tuple[list[int], list[tuple], list[str]]:
    """-> (readable rows, their (width, height), their modes) from each image's header; a bad one stops the run
    (naming its row) or, with --on-bad-image skip, is left out and listed."""
    from PIL import Image
    rows, sizes, modes, bad = [], [], [], []
    for start in range(0, len(split), 1000):
        cells = split[start:start + 1000][column]
        for offset, cell in enumerate(cells):
            try:
                with Image.open(_source(cell)) as im:
                    sizes.append(im.size)
                    modes.append(im.mode)
                rows.append(start + offset)
            except BAD_IMAGE_ERRORS as e:
                if on_bad != "skip":
                    raise bad_row(name, column, start + offset, e) from None
                bad.append(start + offset)
    if bad:
        (log or _stderr)(f"--on-bad-image skip: left out {len(bad)} unreadable row(s) of split '{name}': "
                       + ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else ""))
    if not rows:
        raise UserError(f"no readable image is left in split '{name}'; check the data set")
    return rows, sizes, modes


@dataclass
class _Read:
    """One split as read: its rows with a readable header, their sizes, modes and labels."""
    split: object
    name: str
    rows: list
    sizes: list
    modes: list
    labels: list

    def in_memory(self, column: str, mode: str, options) -> tuple[ArrayDataset, list[int]]:
        """Every image decoded once by the files' decoder into one uint8 array (the in-memory path)."""
        images, labels = [], []
        for row, label in zip(self.rows, self.labels):
            try:
                images.append(np.asarray(decode(_source(self.split[row][column]), mode)))
                labels.append(label)
            except BAD_IMAGE_ERRORS as e:  # a header that opens but pixels that do not decode
                if options.on_bad_image != "skip":
                    raise bad_row(self.name, column, row, e) from None
                (options.log or _stderr)(f"--on-bad-image skip: left out row {row} of split '{self.name}' (its "
                                         f"pixels do not decode)")
        if not images:
            raise UserError(f"no readable image is left in split '{self.name}'; check the data set")
        return ArrayDataset(np.stack(images), labels), labels


@register_dataset("hf", "a Hugging Face data set: a save_to_disk folder, a folder of parquet files (data/train-*) "
                        "or a Hub id user/name (extra ssat[hf])", options=HFOptions, root_may_be_id=True)
def load(root, download, options) -> DataBundle:
    if root is None:
        raise UserError("--dataset hf needs --data-root: a save_to_disk folder, a folder of parquet files or a Hub "
                        "id (user/name)")
    splits, source, pinned = _open(root, options, download)
    test_name = options.hf_test_split or ("test" if "test" in splits else "validation" if "validation" in splits
                                          else None)
    if test_name is None:
        raise UserError(f"the data set has no 'test' or 'validation' split (it has {', '.join(splits)}); pass "
                        f"--hf-test-split")
    train = _split(splits, options.hf_train_split, "--hf-train-split")
    test = _split(splits, test_name, "--hf-test-split")
    image_col, (label_col, names) = _image_column(train, options), _label_column(train, options)
    missing = next((c for c in (image_col, label_col) if c not in test.features), None)
    if missing:
        raise UserError(f"split '{test_name}' has no column '{missing}' (columns: {', '.join(test.features)}); "
                        f"give every split the same columns")
    index = None
    if names is None:  # plain integers: the classes are the training split's values, sorted
        values = sorted(set(train[label_col]) - {None})
        index, names = {v: i for i, v in enumerate(values)}, [str(v) for v in values]
    decoded = _datasets().Image(decode=False)  # the bytes, for the files' decoder
    wanted = {"train": (train, options.hf_train_split), "test": (test, test_name)}
    reads = {}
    for key, (split, name) in wanted.items():
        if key in options.splits:  # evaluation reads the test split only
            split = split.cast_column(image_col, decoded)
            labels = _labels(split, label_col, name, names, index)
            rows, sizes, modes = _scan(split, image_col, name, options.on_bad_image, options.log)
            reads[key] = _Read(split, name, rows, sizes, modes, [labels[r] for r in rows])
    modes = {m for r in reads.values() for m in r.modes}
    mode = "L" if modes and all(m in GRAY_MODES for m in modes) else "RGB"
    chans = 1 if mode == "L" else 3
    sizes = {s for r in reads.values() for s in r.sizes}
    one_size = len(sizes) == 1 and sum(len(r.rows) for r in reads.values()) * np.prod(next(iter(sizes))) * chans \
        <= MAX_BYTES
    built = {key: (ArrayDataset(np.zeros((0, 1, 1), np.uint8), []), []) for key in wanted}
    for key, r in reads.items():
        built[key] = r.in_memory(image_col, mode, options) if one_size else \
            (HFImages(r.split, image_col, r.labels, mode, r.name, r.rows), r.labels)
    train_set, train_labels = built["train"]
    if one_size and "train" in options.splits:
        mean, std = array_stats(train_set.images)
    elif chans == 1:
        mean, std = (float(np.mean(IMAGENET_MEAN)),), (float(np.mean(IMAGENET_STD)),)
    else:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    read = ", ".join(f"{key} split '{r.name}' ({len(built[key][1])} rows)" for key, r in reads.items())
    if options.log:  # (evaluation prints JSON alone)
        options.log(f"hf: {source}, {read}, columns '{image_col}' / '{label_col}', {len(names)} classes, "
                    + (f"one image size {next(iter(sizes))} (in memory)" if one_size else
                       f"{len(sizes)} image sizes (decoded per item)"))
    # config.yaml records what was read, so that a rerun reads the same columns and splits
    pinned.update(hf_image_column=image_col, hf_label_column=label_col, hf_test_split=test_name)
    native = min(next(iter(sizes))) if len(sizes) == 1 else 224
    return DataBundle(name="hf", train=train_set, test=built["test"][0], train_targets=list(train_labels),
                      classes=names, in_chans=chans, native_size=native, mean=mean, std=std, source=source,
                      pinned=pinned)
