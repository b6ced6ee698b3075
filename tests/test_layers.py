"""The package reads one way: config -> data -> graph -> model -> infer -> train -> evaluate -> cli.

Applying a trained run (``infer``) sits below training, so that loading a run and completing
data never imports the training stack (Lightning).

Each module imports only from its own layer and the layers below it (imports inside
functions included), and stays small enough to read: at most 400 lines a module,
60 lines a function.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tgatunet"

# Layer of each top-level part of the package, lowest first.
LAYERS = {
    "errors": 0, "config": 0, "hardware": 0, "files": 0, "profiling": 0, "plots": 0,
    "data": 1,
    "graph": 2,
    "model": 3,
    "infer": 4,
    "train": 5,
    "evaluate": 6, "bench": 6,
    "cli": 7, "cli_tools": 7, "report": 7, "api": 7, "__init__": 7, "__main__": 7,
}  # fmt: skip
NAMES = ["config", "data", "graph", "model", "infer", "train", "evaluate", "cli"]


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _part(module: str) -> str:
    """``tgatunet.train.run`` -> ``train``; ``tgatunet`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer_of(path: Path) -> int:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return LAYERS[rel.parts[0]]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "tgatunet" else [])
            found += [(node.lineno, n) for n in names if n.startswith("tgatunet")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tgatunet")]
    return found


def test_every_part_of_the_package_has_a_layer():
    assert {p.relative_to(PACKAGE).with_suffix("").parts[0] for p in _modules()} <= set(LAYERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_from_its_layer_or_below(path):
    own = _layer_of(path)
    above = [
        f"line {line}: {name} ({NAMES[LAYERS[_part(name)]]} is above {NAMES[own]})"
        for line, name in _imports(path)
        if name != "tgatunet" and LAYERS[_part(name)] > own
    ]
    assert not above, f"{path.relative_to(PACKAGE)} imports from a layer above its own: {above}"


def test_the_layer_test_catches_an_upward_import(tmp_path):
    module = tmp_path / "fake.py"
    module.write_text("def f():\n    from tgatunet.evaluate.trained_run import load_run\n")
    assert [name for _, name in _imports(module)] == ["tgatunet.evaluate.trained_run"]
    assert LAYERS[_part("tgatunet.evaluate.trained_run")] > LAYERS["data"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 400, f"{path.relative_to(PACKAGE)} has {len(text.splitlines())} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert not long, f"{path.relative_to(PACKAGE)}: functions over 60 lines: {long}"
