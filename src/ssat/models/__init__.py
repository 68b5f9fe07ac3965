from ssat.models.registry import MODELS, ModelSpec, build_backbone, register_model
from ssat.models import vit as _vit, hierarchical as _hierarchical, cvt as _cvt  # noqa: F401  (register)

__all__ = ["MODELS", "ModelSpec", "build_backbone", "register_model"]
