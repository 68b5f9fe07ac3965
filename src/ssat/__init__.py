"""ssat: train Vision Transformers on small data sets with a Self-Supervised Auxiliary Task (MAE)."""

from ssat.config import Config
from ssat.errors import UserError
from ssat.version import __version__

__all__ = ["Config", "UserError", "__version__"]
