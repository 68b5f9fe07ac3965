"""ssat: train Vision Transformers on small data sets with a Self-Supervised Auxiliary Task (MAE)."""

from ssat.config import Config
from ssat.errors import UserError

__version__ = "0.1.0"
__all__ = ["Config", "UserError", "__version__"]
