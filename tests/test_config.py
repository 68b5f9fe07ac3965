"""Config: each option's own rule sits on its field and is what validate() reports; importing ssat.config loads no
extension (the entry points do); config.pyi, the typed view of the assembled Config, is current."""

import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssat.config import Config, CoreConfig
from ssat.errors import UserError
from ssat.options import flag_of

ROOT = Path(__file__).resolve().parents[1]
RULED = [f for f in dataclasses.fields(Config) if f.metadata.get("check")]


def test_the_typed_view_is_current():
    spec = importlib.util.spec_from_file_location("config_stub", ROOT / "tools" / "config_stub.py")
    stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub)
    text = stub.stub_text()
    assert (ROOT / "src" / "ssat" / "config.pyi").read_text() == text, "run `make stub`"
    for f in dataclasses.fields(Config):  # every option, core or declared by a part, is typed there
        assert f"    {f.name}: {f.type} = ..." in text


def test_rules_on_fields_cover_core_and_part_options():
    names = {f.name for f in RULED}
    assert {"lam", "mask_ratio", "epochs", "decoder_dim", "temperature", "frames"} <= names


@pytest.mark.parametrize("f", RULED, ids=lambda f: f.name)
def test_each_field_rule_is_the_line_validate_gives(f):
    rule = f.metadata["check"]
    bad = next(v for v in (-1, 0, 1, 2) if rule.problem(v))  # every rule here refuses one of these
    with pytest.raises(UserError) as e:
        Config(**{f.name: bad}).validate()
    assert str(e.value).startswith(f"{flag_of(f)} must be") and f"got {bad}" in str(e.value)
    default = Config()
    assert rule.problem(getattr(default, f.name)) is None  # the default meets its own rule


REQUIRED = [f for f in dataclasses.fields(Config) if not str(f.type).startswith("Optional[") and f.default is not None]


def test_an_option_that_must_have_a_value_refuses_null_and_the_others_take_it():
    """`device: null` in a config file was taken as given and failed later with a traceback."""
    assert {"device", "epochs", "lam", "dataset"} <= {f.name for f in REQUIRED}
    for f in REQUIRED:
        with pytest.raises(UserError, match=f"option '{f.name}' must be a .*, got null; give it a value"):
            Config.from_dict({f.name: None}, source="c.yaml")
    unset = [f.name for f in dataclasses.fields(Config) if str(f.type).startswith("Optional[")]
    assert Config.from_dict({name: None for name in unset}).validate()


def test_the_common_data_options_are_declared_once():
    from ssat.data.registry import CommonDataOptions, DataOptions
    common = {f.name for f in dataclasses.fields(CommonDataOptions)}
    assert common <= {f.name for f in dataclasses.fields(Config)}
    assert not common & {f.name for f in dataclasses.fields(CoreConfig)}
    assert all(getattr(DataOptions(), n) == getattr(Config(), n) for n in common)


def test_importing_config_loads_no_extension_the_entry_points_do(tmp_path):
    (tmp_path / "markplug.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass
        from pathlib import Path
        from ssat.data import register_dataset
        from ssat.options import opt
        Path(__file__).with_name("imported").touch()

        @dataclass
        class Options:
            mark_level: int = opt(1, "a toy option", "data")

        @register_dataset("markset", "toy", options=Options)
        def load(root, download, options):
            raise NotImplementedError
    '''))
    code = textwrap.dedent('''
        import sys
        from pathlib import Path
        from ssat.config import Config, config_type
        assert not Path(sys.argv[1], "imported").exists(), "import ssat.config loaded SSAT_PLUGINS"
        assert config_type() is Config and not hasattr(Config(), "mark_level")
        import ssat
        cfg = ssat.config(mark_level=3)  # the entry point loads the extension, its option is a field
        assert Path(sys.argv[1], "imported").exists() and cfg.mark_level == 3 and isinstance(cfg, Config)
        import ssat.cli
        # start-up stays lean: scikit-learn / SciPy (about 2 s) and datasets load only when a data set needs them
        assert not {"sklearn", "scipy", "datasets"} & set(sys.modules), sorted({"sklearn", "scipy", "datasets"}
                                                                               & set(sys.modules))
        print("ok")
    ''')
    env = {**os.environ, "SSAT_PLUGINS": "markplug",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
