"""Adding an auxiliary task with its own option, or a backbone with its own option, is one new file: a module
outside ssat, named in SSAT_PLUGINS, registers both; `ssat train` then offers their flags, checks their values
and trains them end to end, and the run records their options. (A file inside src/ssat/auxtasks/ or
src/ssat/models/ is picked up the same way, without the variable.)"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = textwrap.dedent('''
    """A toy extension: a rotation-prediction auxiliary task and a two-layer CNN backbone, each with one option."""
    from __future__ import annotations

    from dataclasses import dataclass

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from ssat.auxtasks import AuxTask, register_aux
    from ssat.errors import UserError
    from ssat.models import Capabilities, register_model
    from ssat.options import opt


    @dataclass
    class RotationOptions:
        rotation_hidden: int = opt(16, "hidden units of the rotation head", "method")

        @staticmethod
        def check(cfg) -> None:
            if cfg.rotation_hidden < 1:
                raise UserError(f"--rotation-hidden must be at least 1, got {cfg.rotation_hidden}")


    class RotationTask(AuxTask):
        def __init__(self, backbone, hidden):
            super().__init__()
            self.head = nn.Sequential(nn.Linear(backbone.num_features, hidden), nn.ReLU(), nn.Linear(hidden, 4))

        def loss(self, backbone, images, other_view=None, other_features=None):
            k = torch.randint(0, 4, (images.shape[0],), device=images.device)
            rotated = torch.stack([torch.rot90(x, int(r), dims=(1, 2)) for x, r in zip(images, k)])
            loss = F.cross_entropy(self.head(backbone.embed(rotated)), k)
            return loss, {"loss_rotation": loss.detach()}


    @register_aux("rotation", options=RotationOptions)
    def build_rotation(backbone, cfg):
        return RotationTask(backbone, cfg.rotation_hidden)


    @dataclass
    class ToyCNNOptions:
        toy_width: int = opt(8, "channels of the toy CNN", "model")


    class Encoder(nn.Module):
        def __init__(self, in_chans, width, num_classes):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(width, num_classes)
            self.num_features = width

        def forward_features(self, x):
            return self.features(x)

        def forward_head(self, x, pre_logits=False):
            pooled = x.mean(dim=(2, 3))
            return pooled if pre_logits else self.head(pooled)

        def forward(self, x):
            return self.forward_head(self.forward_features(x))


    class ToyCNN(nn.Module):
        def __init__(self, *, img_size, patch_size, in_chans, num_classes, drop_path, global_pool, pos_embed, init,
                     cfg):
            super().__init__()
            self.encoder = Encoder(in_chans, cfg.toy_width, num_classes)
            self.in_chans, self.num_classes, self.num_features = in_chans, num_classes, cfg.toy_width
            self.timm_name, self.timm_kwargs = None, {}

        def forward(self, x):
            return self.encoder(x)

        def embed(self, x, encoder=None):
            encoder = encoder if encoder is not None else self.encoder
            return encoder.forward_head(encoder.forward_features(x), pre_logits=True)

        def no_weight_decay(self):
            return set()


    register_model("toy_cnn", ToyCNN, "a two-layer CNN (toy extension)", Capabilities(), options=ToyCNNOptions)
''')


def ssat(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "toyplug.py").write_text(PLUGIN)
    env = {**os.environ, "SSAT_PLUGINS": "toyplug",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ssat", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_task_and_a_backbone_from_one_new_file_train_with_their_options(tmp_path):
    out = tmp_path / "run"
    common = ["train", "--model", "toy_cnn", "--method", "ssat", "--aux", "rotation", "--epochs", "1",
              "--per-class", "4", "--batch-size", "8", "--no-energy", "--quiet", "--device", "cpu"]
    done = ssat(tmp_path, *common, "--rotation-hidden", "5", "--toy-width", "6", "--out", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == "toy_cnn" and summary["aux"] == "rotation"
    config = (out / "config.yaml").read_text()
    assert "rotation_hidden: 5" in config and "toy_width: 6" in config
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["loss_aux"] > 0

    bad = ssat(tmp_path, *common, "--rotation-hidden", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.strip() == "ssat: error: --rotation-hidden must be at least 1, got 0"

    # the run read back without the extension: the line says what to load
    alone = subprocess.run([sys.executable, "-m", "ssat", "eval", "--checkpoint", str(out)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "SSAT_PLUGINS"})
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1, alone.stderr
    assert "unknown option(s) rotation_hidden, toy_width" in alone.stderr and "SSAT_PLUGINS" in alone.stderr

    listed = ssat(tmp_path, "models", "--json", "--img-size", "8")
    rows = {r["model"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert "rotation" in rows["toy_cnn"]["aux"] and "rotation" in rows["vit_tiny"]["aux"]


def test_an_extension_that_cannot_be_imported_is_one_line(tmp_path):
    env = {**os.environ, "SSAT_PLUGINS": "no_such_ssat_plugin"}
    done = subprocess.run([sys.executable, "-m", "ssat", "models"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.startswith("ssat: error: SSAT_PLUGINS names 'no_such_ssat_plugin'")
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_option_name_two_extensions_declare_is_refused():
    from dataclasses import dataclass

    from ssat.errors import UserError
    from ssat.options import declare_options, opt

    @dataclass
    class Clash:
        temperature: float = opt(1.0, "clashes with SimCLR's", "method")

    with pytest.raises(UserError, match="option 'temperature', which auxiliary task 'simclr' already declares"):
        declare_options("auxiliary task 'toy'", Clash)


BROKEN = {  # module text -> what its one line must say
    "x = 1\nraise RuntimeError('boom at import')\n": "failed to load: RuntimeError: boom at import ({m}.py, line 2)",
    "def f(:\n    pass\n": "failed to load: SyntaxError: invalid syntax ({m}.py, line 1)",
    "import no_such_dependency_of_a_plugin\n": "No module named 'no_such_dependency_of_a_plugin' ({m}.py, line 1); "
                                               "install what it imports",
    "from ssat.auxtasks import register_aux\n@register_aux('nodc', options=dict)\ndef b(backbone, cfg):\n"
    "    pass\n": "options must be a dataclass of opt(...) fields, got <class 'dict'> ({m}.py, line 2)",
    "from ssat.models import register_model\nfrom ssat.models.vit import VIT, vit_builder\n"
    "register_model('vit_mini', vit_builder('vit_tiny_patch16_224'), 'mine', VIT)\n":
        "model 'vit_mini' is already registered (by ssat.models.vit); register yours under another name",
    "from ssat.auxtasks import register_aux\n@register_aux('mae')\ndef b(backbone, cfg):\n    pass\n":
        "auxiliary task 'mae' is already registered (by ssat.auxtasks.mae)",
    "from ssat.data import register_dataset\n@register_dataset('digits', 'mine')\ndef load(root, download, o):\n"
    "    pass\n": "data set 'digits' is already registered (by ssat.data.",
}


@pytest.mark.parametrize("i,text", list(enumerate(BROKEN)))
def test_a_broken_extension_is_one_line_naming_its_file_and_line(tmp_path, monkeypatch, i, text):
    from ssat.auxtasks import AUX_TASKS
    from ssat.data import DATASETS
    from ssat.models import MODELS
    from ssat.plugins import load_plugin
    before = (dict(MODELS), dict(AUX_TASKS), dict(DATASETS))
    name = f"broken_plugin_{i}"
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    error = load_plugin(name)
    assert error is not None and "\n" not in error and BROKEN[text].format(m=name) in error, error
    assert (dict(MODELS), dict(AUX_TASKS), dict(DATASETS)) == before  # the built-ins are untouched


def test_a_relative_module_name_is_one_line():
    from ssat.plugins import load_plugin
    assert "a relative module name; name the module in full" in load_plugin(".toyplug")


@pytest.mark.slow
def test_an_option_clashing_with_a_core_option_is_one_line_not_an_import_traceback(tmp_path):
    (tmp_path / "clashplug.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from ssat.auxtasks import register_aux
        from ssat.options import opt

        @dataclass
        class Options:
            epochs: int = opt(3, "clashes with the core --epochs", "method")

        @register_aux("clashy", options=Options)
        def build(backbone, cfg):
            pass
    '''))
    env = {**os.environ, "SSAT_PLUGINS": "clashplug",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "ssat", "data", "info", "--dataset", "digits"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.strip() == (
        "ssat: error: auxiliary task 'clashy' declares option(s) epochs, which ssat's core already has; rename them")
