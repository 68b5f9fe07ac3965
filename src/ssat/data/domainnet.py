"""DomainNet (345 classes, six domains) in its release layout: `<root>/<domain>/<class>/<image>` plus the split
files `<root>/<domain>_train.txt` and `<domain>_test.txt`, one `<domain>/<class>/<file> <label>` per line.
`--domain` picks the domain; class names come from the paths."""

from __future__ import annotations

from dataclasses import dataclass

from ssat.data.files import FileImageDataset, check_files, file_bundle
from ssat.data.registry import IMAGENET_MEAN, IMAGENET_STD, register_dataset
from ssat.errors import UserError
from ssat.options import opt

DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
NUM_CLASSES = 345


def _read_split(root, domain: str, split: str):
    path = root / f"{domain}_{split}.txt"
    if not path.is_file():
        raise UserError(f"DomainNet split file {path} not found; set --data-root to the folder holding "
                        f"{domain}/ and {domain}_train.txt / {domain}_test.txt")
    paths, labels, names = [], [], {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; restore the released split file") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise UserError(f"{path}:{n}: expected '<domain>/<class>/<file> <label>', got {line!r}")
        rel, label = parts[0], int(parts[1])
        if not 0 <= label < NUM_CLASSES:  # a typo of 99999 would otherwise build a 100,000-class model
            raise UserError(f"{path}:{n}: label {label} is outside DomainNet's 0..{NUM_CLASSES - 1}; fix the line")
        paths.append(root / rel)
        labels.append(label)
        class_name = rel.split("/")[-2] if rel.count("/") >= 2 else str(label)
        if names.setdefault(label, class_name) != class_name:
            raise UserError(f"{path}:{n}: label {label} is used for both {names[label]} and {class_name}")
    if not paths:
        raise UserError(f"{path} lists no images")
    check_files(paths, str(path))
    return paths, labels, names


@dataclass
class DomainNetOptions:
    domain: str = opt("clipart", "DomainNet domain", "data", choices=",".join(DOMAINS),
                      at_eval="DomainNet domain to evaluate on [default: the one it was trained on]")


@register_dataset("domainnet", "DomainNet, release layout (<domain>/<class>/..., <domain>_train.txt); --domain",
                  options=DomainNetOptions)
def load(root, download, options):
    if options.domain not in DOMAINS:
        raise UserError(f"--domain {options.domain}: choose one of {', '.join(DOMAINS)}")
    if download:
        raise UserError("DomainNet is large (~20 GB): download the domain's zip and split files from "
                        "ai.bu.edu/M3SDA and put them in --data-root")
    if root is None:
        raise UserError("--dataset domainnet needs --data-root: the folder holding the domain folders")
    train_paths, train_labels, train_names = _read_split(root, options.domain, "train")
    test_paths, test_labels, test_names = _read_split(root, options.domain, "test")
    names = {**test_names, **train_names}
    num_classes = max(names) + 1
    classes = [names.get(c, str(c)) for c in range(num_classes)]
    return file_bundle("domainnet", FileImageDataset(train_paths, train_labels),
                       FileImageDataset(test_paths, test_labels), classes, options, IMAGENET_MEAN, IMAGENET_STD,
                       root=root)
