"""Every registered backbone x every method x every auxiliary task x input sizes 8, 28, 32 and 64 px: the
combination trains one optimizer step, or is refused with one UserError line. Any other exception (a shape
mismatch deep in a model, an assertion) fails, as it would reach a user as a traceback."""

import pytest
import torch

from ssat import engine
from ssat.auxtasks import AUX_TASKS, AUX_VIEWS
from ssat.config import Config, default_patch_size
from ssat.errors import UserError
from ssat.methods import METHODS
from ssat.models import MODELS
from ssat.objective import build_model

SIZES = (8, 28, 32, 64)
SMALL = dict(decoder_dim=16, decoder_depth=1, decoder_heads=2, dino_out_dim=32, drop_path=0.0)


def combos():
    for model in sorted(MODELS):
        for method, spec in METHODS.items():
            if spec.pretrained_init:
                continue  # sslft is scratch's step from another run's encoder (tests/test_methods.py)
            for aux in (sorted(AUX_TASKS) if spec.auxiliary else [None]):
                for size in SIZES:
                    yield model, method, aux, size


def one_step(model: str, method: str, aux, size: int) -> None:
    options = {**SMALL, "model": model, "method": method, "img_size": size,
               "patch_size": default_patch_size(size, model), "batch_size": 2}
    if aux is not None:
        options["aux"] = aux
    cfg = Config.from_dict(options).validate()
    torch.manual_seed(0)
    ssat_model = build_model(cfg, num_classes=3, in_chans=1 if size in (8, 28) else 3)
    two_views = AUX_VIEWS.get(aux, 1) == 2
    x = torch.randn(2, ssat_model.backbone.in_chans, size, size)
    y = torch.tensor([0, 1])
    optimizer = engine.build_optimizer(ssat_model, 1e-3, 0.05, torch.device("cpu"))
    out = ssat_model(x, y, x.flip(-1) if two_views else None)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    optimizer.step()


@pytest.mark.parametrize("model,method,aux,size", list(combos()),
                         ids=lambda v: str(v) if v is not None else "-")
def test_every_combination_trains_a_step_or_is_refused_in_one_line(model, method, aux, size):
    try:
        one_step(model, method, aux, size)
    except UserError as e:
        message = str(e)
        assert message and "\n" not in message and "; " in message, message  # one line naming the fix
