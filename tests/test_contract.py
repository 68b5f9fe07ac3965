"""Every registered backbone x every method x every auxiliary task x input sizes 8, 28, 32 and 64 px (clips of 4
frames for the video backbones): the
combination trains one optimizer step (finite loss, the encoder moves, both loss parts reported, predictions of
the right shape), or is refused with one UserError line, and only where the registries declare it unsupported
(`AuxSpec.fits`): a supported combination wrongly refused fails. Any other exception (a shape mismatch deep in a model,
an assertion) fails, as it would reach a user as a traceback. Backbones are built shallow (conftest.py)."""

import copy

import pytest
import torch

from conftest import make_teacher
from ssat import engine, objective
from ssat.auxtasks import AUX_TASKS
from ssat.config import Config, default_patch_size
from ssat.errors import UserError
from ssat.methods import METHODS
from ssat.models import MODELS, input_shape
from ssat.objective import build_model

SIZES = (8, 28, 32, 64)
FRAMES = 4  # clip length for the video backbones (two tubelets of two frames)
SMALL = dict(decoder_dim=16, decoder_depth=1, decoder_heads=2, dino_out_dim=32, drop_path=0.1)


def combos():
    for model in sorted(MODELS):
        for size in SIZES:
            for method, spec in METHODS.items():
                if spec.pretrained_init:
                    continue  # sslft is scratch's step from another run's encoder (tests/test_methods.py)
                for aux in (sorted(AUX_TASKS) if spec.auxiliary else [None]):
                    yield model, method, aux, size


def declared_supported(model: str, method: str, aux, size: int) -> bool:
    """What the registries promise: a method with an auxiliary stream where the task's spec says it fits the
    backbone at this size, anything else on any backbone."""
    caps = MODELS[model].capabilities
    return not METHODS[method].auxiliary or AUX_TASKS[aux].fits(caps, size, default_patch_size(size, model))


_BUILT = {}
REAL_BUILD = objective.build_backbone


def cached_backbone(name, **kwargs):
    """Each (backbone, size) is built once and copied per combination; the matrix is ordered by model, then size."""
    key = (name, repr(sorted(kwargs.items())))
    if key not in _BUILT:
        _BUILT.clear()
        _BUILT[key] = REAL_BUILD(name, **kwargs)
    return copy.deepcopy(_BUILT[key])


def one_step(model: str, method: str, aux, size: int) -> None:
    options = {**SMALL, "model": model, "method": method, "img_size": size,
               "patch_size": default_patch_size(size, model), "batch_size": 4}
    if aux is not None:
        options["aux"] = aux
    in_chans = 1 if size in (8, 28) else 3
    if aux == "guidance":  # its teacher: a (shallow) cifar_resnet56 run on the same data, one block per stage
        options.update(guidance_teacher=str(TEACHERS[in_chans]), guidance_blocks="0,-1,-1")
    cfg = Config.from_dict(options).validate()
    torch.manual_seed(0)
    frames = FRAMES if MODELS[model].capabilities.video else 0  # video models read clips, image models images
    net = build_model(cfg, num_classes=3, in_chans=in_chans, frames=frames)
    if hasattr(net.backbone, "total_stride"):  # what the capability declares is what the backbone does
        assert net.backbone.total_stride == cfg.patch_size * MODELS[model].capabilities.stage_downsampling
    two_views = (aux in AUX_TASKS and AUX_TASKS[aux].views == 2)
    x = torch.randn(4, *input_shape(net.backbone.in_chans, size, frames))
    y = torch.tensor([0, 1, 2, 0])
    optimizer = engine.build_optimizer(net, 1e-3, 0.05, torch.device("cpu"))
    before = [p.detach().clone() for p in net.backbone.parameters() if p.requires_grad]
    out = net(x, y, x.flip(-1) if two_views else None)
    assert torch.isfinite(out.loss)
    if METHODS[method].primary and METHODS[method].auxiliary:
        assert {"loss_primary", "loss_aux"} <= set(out.parts)
    out.loss.backward()
    optimizer.step()
    net.after_step(0.5)
    after = [p.detach() for p in net.backbone.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after)), "the encoder did not move"
    net.eval()
    assert net.predict(x).shape == (4, 3)


TEACHERS = {}


@pytest.fixture(scope="module", autouse=True)
def _teachers(tmp_path_factory):
    for chans in (1, 3):
        TEACHERS[chans] = make_teacher(tmp_path_factory.mktemp(f"teacher{chans}"), chans, classes=3, depth=1)


@pytest.mark.parametrize("model,method,aux,size", list(combos()),
                         ids=lambda v: str(v) if v is not None else "-")
def test_every_combination_trains_a_step_or_is_refused_in_one_line(model, method, aux, size, shallow_backbones,
                                                                   monkeypatch):
    monkeypatch.setattr(objective, "build_backbone", cached_backbone)
    try:
        one_step(model, method, aux, size)
    except UserError as e:
        message = str(e)
        assert message and "\n" not in message and "; " in message, message  # one line naming the fix
        assert not declared_supported(model, method, aux, size), f"declared supported, but refused: {message}"
