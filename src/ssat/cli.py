"""The `ssat` command: lists the commands (each module in ssat/commands owns its parser and its main), runs one.

Precedence: Config defaults < --config YAML < command-line flags. Any UserError -> `ssat: error: ...`, exit 2."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

from ssat.commands import Parser
from ssat.errors import UserError, first_line
from ssat.plugins import check_plugins, load_plugins

# The commands in `ssat --help` order; each module adds its parsers (`add_parsers(sub)`) with their handlers.
COMMANDS = ["ssat.commands.train", "ssat.commands.inference", "ssat.commands.table", "ssat.commands.datainfo",
            "ssat.commands.sweep", "ssat.commands.report", "ssat.commands.explain", "ssat.commands.export",
            "ssat.commands.models", "ssat.commands.bench"]


def build_parser() -> Parser:
    parser = Parser(prog="ssat", description="Train Vision Transformers on small data sets with a "
                    "Self-Supervised Auxiliary Task (SSAT: joint classification + MAE reconstruction).")
    from ssat.version import __version__
    parser.add_argument("--version", action="version", version=f"ssat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in COMMANDS:
        importlib.import_module(module).add_parsers(sub)
    return parser


def one_line(message: str) -> str:
    """A UserError raised in a DataLoader worker arrives wrapped in the worker's traceback; keep its own line."""
    marker = "UserError: "
    if "Original Traceback" in message and marker in message:
        return message.rsplit(marker, 1)[1].strip().splitlines()[0]
    return message


def main(argv: Optional[list[str]] = None) -> int:
    load_plugins()  # before the parser: extensions add flags; a failure is reported below, in one line
    parser = build_parser()
    try:
        check_plugins()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return args.handler(args)
    except UserError as e:
        print(f"ssat: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`ssat table runs | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # disk full, permission denied, not a directory ... on a path the user gave
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"ssat: error: {e.strerror or first_line(e)}{where}; check the path, its permissions and the free "
              f"disk space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssat: interrupted; a training run continues from its last epoch with `ssat train --resume DIR`",
              file=sys.stderr)
        return 130
