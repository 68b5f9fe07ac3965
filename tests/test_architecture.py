"""Dependencies point one way (docs/architecture.md): every `ssat` import, module-level or inside a function,
goes to the same layer or a lower one; no command imports another command; the import graph has no cycle."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Lower number = lower layer. A module's layer is that of its longest matching prefix.
LAYERS = {
    "ssat.errors": 0, "ssat.methods": 0, "ssat.options": 0, "ssat.flops": 0, "ssat.hostmem": 0, "ssat.version": 0,
    "ssat.models.layers": 0, "ssat.auxtasks.masking": 0, "ssat.metrics": 0, "ssat.weightfile": 0, "ssat.hubweights": 0,
    "ssat.models": 1, "ssat.auxtasks": 1, "ssat.data": 1,
    "ssat.config": 2, "ssat.plugins": 2,
    "ssat.runs": 3, "ssat.records": 3, "ssat.distributed": 3, "ssat.engine": 3, "ssat.cost": 3, "ssat.tracking": 3,
    "ssat.objective": 3,
    "ssat.training": 4, "ssat.inference": 4, "ssat.api": 4, "ssat.modelcard": 4,
    "ssat.commands": 5,
    "ssat.cli": 6, "ssat.__main__": 6, "ssat": 6,
}


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


MODULES = {module_name(p): p for p in sorted((SRC / "ssat").rglob("*.py"))}


def layer(module: str) -> int:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return LAYERS[best]


def imports(module: str) -> set[str]:
    """The ssat modules `module` imports; `from ssat.x import y` counts as ssat.x.y when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ssat":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ssat"}
    return found - {module}


def is_package_init(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    for target in imports(module):
        if is_package_init(module) and target.startswith(module + "."):
            continue  # a registry package importing its own plugins
        if target == module.rsplit(".", 1)[0] and is_package_init(target):
            continue  # a plugin importing its own package
        assert layer(target) <= layer(module), f"{module} (layer {layer(module)}) imports {target} " \
                                               f"(layer {layer(target)})"


def test_no_command_imports_another_command():
    commands = [m for m in MODULES if m.startswith("ssat.commands.")]
    for module in commands:
        others = [t for t in imports(module) if t.startswith("ssat.commands.")]
        assert not others, f"{module} imports {others}"


def test_the_import_graph_has_no_cycle():
    graph = {m: {t for t in imports(m) if t in MODULES and not (is_package_init(m) and t.startswith(m + "."))
                 and not (is_package_init(t) and m.startswith(t + "."))} for m in MODULES}
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for t in sorted(graph[m]):
            visit(t)
        path.pop()
        done.add(m)
    for m in sorted(graph):
        visit(m)


def _task_names() -> set[str]:
    from ssat.auxtasks import AUX_TASKS
    return set(AUX_TASKS)


def _strings(node) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return {v for e in node.elts for v in _strings(e)}
    return set()


def test_no_module_outside_auxtasks_compares_an_auxiliary_task_name():
    """What a task needs, records, draws and refuses is asked of its AuxSpec / AuxTask; a name test elsewhere is
    how the last bugs happened (a videomae run's mask ratio went unrecorded)."""
    names, found = _task_names(), []
    for module, path in MODULES.items():
        if module.startswith("ssat.auxtasks"):
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                text = " ".join(ast.get_source_segment(source, s) or "" for s in sides)
                if "aux" in text and any(_strings(s) & names for s in sides):
                    found.append(f"{module}:{node.lineno}: {ast.get_source_segment(source, node)}")
    assert not found, "compare the task's spec, not its name:\n" + "\n".join(found)
