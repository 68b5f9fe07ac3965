"""Your own data as CSV lists: `<root>/train.csv` and `<root>/test.csv` (or `val.csv`), one `path,label` per row
(an optional header row `path,label`). Paths are relative to the CSV's folder (absolute ones, or ones outside
the folder, only with --allow-outside-root); labels are class names or integers. Classes are the sorted set of
training labels (integers sorted numerically)."""

from __future__ import annotations

import csv
from pathlib import Path

from ssat.data.files import FileImageDataset, check_files, file_bundle
from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, register_dataset
from ssat.errors import UserError


def _read(path: Path) -> tuple[list[Path], list[str]]:
    paths, labels = [], []
    try:
        # utf-8-sig: a byte-order mark (as some spreadsheet programs write) is not part of the first path
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8 (CSV)") from None
    except csv.Error as e:
        raise UserError(f"{path} is not a readable CSV file ({e}); fix its rows") from None
    for n, row in enumerate(rows, 1):
        if not row or (n == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise UserError(f"{path}:{n}: expected 'path,label', got {','.join(row)!r}")
        p = Path(row[0].strip())
        paths.append(p if p.is_absolute() else path.parent / p)
        labels.append(row[1].strip())
    if not paths:
        raise UserError(f"{path} lists no images; add 'path,label' rows")
    check_files(paths, str(path))
    return paths, labels


@register_dataset("csv", "your own images listed in <root>/train.csv and <root>/test.csv (path,label rows)")
def load(root, download, options):
    if root is None:
        raise UserError("--dataset csv needs --data-root: the folder holding train.csv and test.csv")
    test_csv = next((root / n for n in ("test.csv", "val.csv") if (root / n).is_file()), None)
    if not (root / "train.csv").is_file() or test_csv is None:
        raise UserError(f"{root} must hold train.csv and test.csv (or val.csv), each with path,label rows")
    train_paths, train_labels = _read(root / "train.csv")
    test_paths, test_labels = _read(test_csv)
    numeric = all(label.lstrip("-").isdigit() for label in train_labels + test_labels)
    classes = sorted(set(train_labels), key=int if numeric else str)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(test_labels) - set(index))
    if unknown:
        raise UserError(f"{test_csv}: label {unknown[0]!r} does not occur in train.csv; every test class needs "
                        f"training images")
    return file_bundle("csv", FileImageDataset(train_paths, [index[y] for y in train_labels]),
                       FileImageDataset(test_paths, [index[y] for y in test_labels]), [str(c) for c in classes],
                       options, IMAGENET_MEAN, IMAGENET_STD, root=root)
