"""Backbones. Every module in this package is imported, so a new family is one new file that calls
`register_model`."""

import importlib
import pkgutil

from ssat.models.registry import MODELS, Capabilities, ModelSpec, build_backbone, input_shape, register_model

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["MODELS", "Capabilities", "ModelSpec", "build_backbone", "input_shape", "register_model"]
