"""How an option is declared. `Config` (ssat.config) is made of the core options declared there plus the options
each extension declares next to its own code: an auxiliary task, a backbone or any other registered part passes a
dataclass of `opt(...)` fields to its `register_*` call, and those fields become `Config` fields, `ssat train`
flags, YAML keys and `config.yaml` entries like any other. A `check(cfg)` function on that dataclass validates
the relations between them (raise UserError with the fix); a check on one value alone sits on its field
(`opt(..., check=at_least(1))`), so the rule is read where the option is."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ssat.errors import UserError


def opt(default: Any, help: str, group: str, flag: Optional[str] = None, choices: Optional[str] = None,
        at_eval: Optional[str] = None, check: Optional["Rule"] = None):
    """A Config field with the metadata the CLI needs (help text, --help group, flag name if not derived).
    `at_eval`: a data set option that may differ at evaluation (`ssat eval --domain`, a sweep's `eval_on`), with the
    help text `ssat eval` shows for it. `check`: the rule its value alone must meet (None always passes)."""
    return field(default=default, metadata={"help": help, "group": group, "flag": flag, "choices": choices,
                                            "at_eval": at_eval, "check": check})


def flag_of(f: dataclasses.Field) -> str:
    """An option's command-line flag (`--mask-ratio`; `--lambda` for `lam`)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


@dataclass(frozen=True)
class Rule:
    """What one option's value must be: `test(value)` and the words that say it ("must be in [0, 1]")."""
    test: Callable[[Any], bool]
    says: str
    hint: str = ""

    def problem(self, value: Any) -> Optional[str]:
        if value is None or self.test(value):
            return None
        return f"{self.says}, got {value}" + (f" ({self.hint})" if self.hint else "")


def at_least(n: float, hint: str = "") -> Rule:
    return Rule(lambda v: v >= n, f"must be at least {n}" if n else "must be >= 0", hint)


def positive(hint: str = "") -> Rule:
    return Rule(lambda v: v > 0, "must be positive", hint)


def within(lo: float, hi: float, ends: str = "[]", hint: str = "") -> Rule:
    """lo..hi, each end closed ('[' / ']') or open ('(' / ')')."""
    left, right = ends
    return Rule(lambda v: (lo <= v if left == "[" else lo < v) and (v <= hi if right == "]" else v < hi),
                f"must be in {left}{lo:g}, {hi:g}{right}", hint)


def check_fields(values: Any, options: type) -> None:
    """Each field's own rule, on the values of `values` (a Config); the first that fails raises its one line."""
    for f in dataclasses.fields(options):
        rule = f.metadata.get("check")
        problem = rule.problem(getattr(values, f.name)) if rule else None
        if problem:
            raise UserError(f"{flag_of(f)} {problem}")


# owner ("auxiliary task 'simclr'", "data set 'domainnet'", ...) -> the dataclass of options it declared
OPTION_SETS: dict[str, type] = {}


def declare_options(owner: str, options: Optional[type]) -> None:
    """Record an extension's options; a name another extension (or the core) already uses is refused."""
    if options is None:
        return
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"{owner}: options must be a dataclass of opt(...) fields, got {options!r}")
    # the same options class may serve several parts (the twelve MedMNIST sets share --medmnist-size), and a
    # subclass adds its own to options it shares (the video sets' --frames, FaceForensics++'s --manipulations)
    related = lambda cls: issubclass(options, cls) or issubclass(cls, options)
    taken = {f.name: o for o, cls in OPTION_SETS.items() if o != owner and not related(cls)
             for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(options):
        if f.name in taken:
            raise UserError(f"{owner} declares option '{f.name}', which {taken[f.name]} already declares; "
                            f"rename one of them")
        if f.default is dataclasses.MISSING or "group" not in f.metadata:
            raise TypeError(f"{owner}: option '{f.name}' needs opt(default, help, group)")
    OPTION_SETS[owner] = options


def refuse_duplicate(kind: str, name: str, registry: dict) -> None:
    """A second registration of a name would silently replace the first (a built-in's runs would then record the
    built-in's name for another thing): refused, naming what holds the name."""
    if name in registry:
        held = registry[name]  # a spec holding its builder / loader, or the builder itself
        owner = getattr(getattr(held, "builder", getattr(held, "loader", held)), "__module__", "?")
        raise UserError(f"{kind} '{name}' is already registered (by {owner}); register yours under another name")
