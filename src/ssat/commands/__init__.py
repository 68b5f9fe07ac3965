"""The `ssat` commands: one module per command group, each owning its parser (`add_parsers(sub)`) and its `main`;
cli.py only lists them. What their parsers share lives here: the one-line error parser, Config's fields as flags
(so every option has one definition) and the registries' epilog."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

from ssat.config import config_type, preset_names
from ssat.errors import UserError
from ssat.options import flag_of


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other user error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_config_flags(parser: argparse.ArgumentParser, only: Optional[dict] = None) -> None:
    """Config's fields as flags (all of them, or the names in `only`, mapped to the command's own defaults)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(config_type()):
        if only is not None and f.name not in only:
            continue
        group = groups.setdefault(f.metadata["group"], parser.add_argument_group(f.metadata["group"]))
        default = f.default if only is None or only[f.name] is None else only[f.name]
        help_text = f.metadata["help"] + ("" if default is None else f" [default: {default}]")
        if f.type in ("bool", "Optional[bool]"):
            group.add_argument(flag_of(f), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:  # parsed as text, converted and range-checked by Config (one message style for flags and YAML)
            group.add_argument(flag_of(f), dest=f.name, metavar=flag_of(f)[2:].upper().replace("-", "_"),
                               default=argparse.SUPPRESS,
                               help=help_text)


def registry_epilog() -> str:
    from ssat.auxtasks import AUX_TASKS
    from ssat.data import DATASETS
    from ssat.methods import METHODS
    from ssat.models import MODELS
    lines = ["models:"] + [f"  {n:<12} {s.description}" for n, s in MODELS.items()]
    lines += ["data sets:"] + [f"  {n:<12} {s.description}" for n, s in DATASETS.items()]
    lines += [f"methods: {', '.join(METHODS)}    auxiliary tasks: {', '.join(AUX_TASKS)}"]
    lines += [f"presets (--preset): {', '.join(preset_names())}"]
    return "\n".join(lines)
