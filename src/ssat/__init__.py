"""ssat: train Vision Transformers on small data sets with a Self-Supervised Auxiliary Task (MAE).

From Python: `ssat.SSAT(timm_vit, aux="mae")` for your own loop, `ssat.train(ssat.config(...))` for ssat's; the
building blocks (masking, patchify, the masked loss, the MAE decoder, the loss weighting) are exported too."""

from ssat.api import SSAT, TimmViT, config
from ssat.auxtasks import AuxTask, register_aux
from ssat.auxtasks.mae import MAEDecoder, MAETask
from ssat.auxtasks.masking import masked_mse, patch_mse, patchify, random_masking, unpatchify
from ssat.config import Config
from ssat.errors import UserError
from ssat.models import Capabilities, build_backbone, register_model
from ssat.objective import LossWeighting, SSATModel
from ssat.training import train
from ssat.version import __version__

__all__ = ["SSAT", "TimmViT", "config", "train", "Config", "UserError", "SSATModel", "LossWeighting", "AuxTask",
           "MAETask", "MAEDecoder", "random_masking", "patchify", "unpatchify", "patch_mse", "masked_mse",
           "register_aux", "register_model", "build_backbone", "Capabilities", "__version__"]
