"""A tiny ViT registered through the public registry: keeps every test fast and shows the extension path."""

from ssat.models import MODELS, register_model
from ssat.models.vit import VIT, vit_builder

if "vit_test" not in MODELS:
    register_model("vit_test", vit_builder("vit_tiny_patch16_224"), "test-only ViT: 32-d, 2 blocks, 2 heads",
                   VIT, embed_dim=32, depth=2, num_heads=2)
