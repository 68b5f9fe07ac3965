import pytest
import torch

import tiny_model  # noqa: F401 (registers vit_test)
from ssat.config import Config

# energy=False: codecarbon's start/stop costs ~1 s per run; one test measures it for real (test_train.py).
TINY = dict(model="vit_test", decoder_dim=16, decoder_depth=1, decoder_heads=2, batch_size=64, epochs=1,
            warmup_epochs=0, quiet=True, deterministic=True, device="cpu", energy=False,
            precision="fp32")  # explicit: exact comparisons need fp32 whatever 'auto' picks


@pytest.fixture
def tiny_cfg():
    def make(**overrides) -> Config:
        return Config.from_dict({**TINY, **overrides})
    return make


@pytest.fixture
def tiny_flags():
    """The TINY settings as `ssat train` flags."""
    flags = []
    for k, v in TINY.items():
        name = "--" + k.replace("_", "-")
        flags += [name] if v is True else ["--no-" + name[2:]] if v is False else [name, str(v)]
    return flags


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    yield
    torch.use_deterministic_algorithms(False)
