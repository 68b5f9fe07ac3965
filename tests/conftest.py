import dataclasses
import os

import pytest
import torch

import tiny_model  # noqa: F401 (registers vit_test)
from ssat.cli import main
from ssat.config import Config

# energy=False: codecarbon's start/stop costs ~1 s per run; one test measures it for real (test_train.py).
# lam / balance / val_fraction: the reference's weighting and no validation split, so that tests about other
# things see the loss and the training set they state; the defaults (ema, λ 0.9, 10 % validation) have their own.
TINY = dict(model="vit_test", decoder_dim=16, decoder_depth=1, decoder_heads=2, batch_size=64, epochs=1,
            warmup_epochs=0, quiet=True, deterministic=True, device="cpu", energy=False,
            precision="fp32",  # explicit: exact comparisons need fp32 whatever 'auto' picks
            lam=0.1, balance="none", val_fraction=0.0)


@pytest.fixture(autouse=True, scope="session")
def _hf_datasets_cache(tmp_path_factory):
    """`datasets` keeps the arrow files it converts parquet into under HF_DATASETS_CACHE: a temporary one here."""
    os.environ["HF_DATASETS_CACHE"] = str(tmp_path_factory.mktemp("hf-datasets-cache"))


@pytest.fixture
def tiny_cfg():
    def make(**overrides) -> Config:
        return Config.from_dict({**TINY, **overrides})
    return make


def as_flags(options: dict) -> list[str]:
    """Config options as `ssat train` flags (each field's own flag name, e.g. lam -> --lambda)."""
    from ssat.options import flag_of
    fields = Config.__dataclass_fields__
    flags = []
    for k, v in options.items():
        name = flag_of(fields[k])
        flags += [name] if v is True else ["--no-" + name[2:]] if v is False else [name, str(v)]
    return flags


@pytest.fixture
def tiny_flags():
    """The TINY settings as `ssat train` flags."""
    return as_flags(TINY)


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    yield
    torch.use_deterministic_algorithms(False)


# Fewer blocks per stage, same widths, strides, windows and heads: depth changes no shape, and full-depth ViT-B /
# Swin-T / CvT-13 in every shape test would make them the slowest tests in the suite. Two blocks per Swin stage keep
# a shifted-window block in each; timm lets these override a model's defaults.
SHALLOW = {"vit": dict(depth=1), "video_vit": dict(depth=1), "slvit": dict(depth=1), "cifar_resnet": dict(depth=1),
           "swin": dict(depths=(2, 2, 2, 2)),
           "resnet": dict(layers=(1, 1, 1, 1))}


@pytest.fixture
def shallow_backbones(monkeypatch):
    """Every registered backbone built shallow for the duration of a test."""
    from ssat.models import MODELS, cvt
    for name, spec in MODELS.items():
        extra = next((v for k, v in SHALLOW.items() if name.startswith(k)), {})
        monkeypatch.setitem(MODELS, name, dataclasses.replace(spec, kwargs={**spec.kwargs, **extra}))
    monkeypatch.setattr(cvt, "STAGES", [{**s, "depth": 1} for s in cvt.STAGES])


def run_error(capsys, argv) -> str:
    """Run the CLI and check it refused in one line (exit 2, `ssat: error: ...`, no traceback); -> that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssat: error: ") and "Traceback" not in err, err
    return lines[0]


def make_teacher(folder, in_chans: int = 3, classes: int = 10, depth: int = 9, **options):
    """A cifar_resnet56 run's model.safetensors as `ssat train` writes it (untrained weights, BatchNorm statistics
    as initialised): what --guidance-teacher reads. `options`: the teacher's config where it differs."""
    from ssat.models.cifar_resnet import CifarResNetBackbone
    from ssat.runs import save_weights
    folder.mkdir(parents=True, exist_ok=True)
    cfg = Config.from_dict({"model": "cifar_resnet56", "method": "scratch", "img_size": 32, "patch_size": 4,
                            **options})
    net = CifarResNetBackbone(img_size=32, patch_size=4, in_chans=in_chans, num_classes=classes, depth=depth)
    save_weights(folder / "model.safetensors", net.encoder.state_dict(),
                 {"config": cfg.to_dict(), "data": {"classes": [str(c) for c in range(classes)],
                                                    "in_chans": in_chans, "mean": [0.5] * in_chans,
                                                    "std": [0.25] * in_chans}})
    return folder
