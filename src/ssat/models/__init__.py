from ssat.models.registry import MODELS, ModelSpec, build_backbone, register_model
from ssat.models import vit as _vit  # noqa: F401  (registers the ViT family)

__all__ = ["MODELS", "ModelSpec", "build_backbone", "register_model"]
