import pytest
import torch

from ssat.config import Config
from ssat.models import MODELS, register_model
from ssat.models.vit import vit_builder

# A tiny ViT registered through the public registry: keeps every test fast and shows the extension path.
if "vit_test" not in MODELS:
    register_model("vit_test", vit_builder("vit_tiny_patch16_224"), "test-only ViT: 32-d, 2 blocks, 2 heads",
                   embed_dim=32, depth=2, num_heads=2)

TINY = dict(model="vit_test", decoder_dim=16, decoder_depth=1, decoder_heads=2, batch_size=64, epochs=1,
            warmup_epochs=0, quiet=True, deterministic=True, device="cpu")


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
        flags += [name] if v is True else [name, str(v)]
    return flags


@pytest.fixture(autouse=True)
def _restore_torch_globals():
    yield
    torch.use_deterministic_algorithms(False)
