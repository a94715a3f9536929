"""Architecture rules, read from the source with `ast`: brainseg's parts stand in layers, a part
imports only parts of lower layers (and its own modules), and no modules import each other in a
loop. Function-level imports count too: a lazy import is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import PROJECT

# Lowest first. A part is a top-level module or folder of brainseg/; entry points stand on top.
LAYERS: list[set[str]] = [
    {"", "errors"},  # "" = brainseg/__init__.py
    # stdlib helpers (user paths, atomic text files); metrics: their names and directions
    {"quiet", "metrics", "paths"},
    {"run_lock"},  # one live process per run directory or output folder
    {"config"},  # Hydra helpers: instantiation, resolvers, a job's swept keys
    {"models", "losses", "checkpoint"},
    {"runfiles"},  # the formats of the files a run writes (may name the metrics' columns)
    {"tracking"},  # W&B: the logger, the run summary (from runfiles), the sweep report's run
    {"cli"},  # entry-point plumbing: one-line user errors, exit status, failure records
    {"data"},
    {"postprocessing"},  # steps and the decision rule; may score with metrics
    {"evaluation"},  # pure computation: statistics, folds
    {"reporting"},  # tables, figures, folder scoring, the sweep report
    {"prediction"},  # checkpoints to masks; needs nothing from training
    {"training"},  # its final validation predicts as predict.py does
    {"evaluate", "hydra_callbacks"},  # entry points
]

Graph = dict[str, dict[str, int]]  # module -> imported module -> line of the first such import


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str) -> Graph:
    """Imports between the modules of `package` (a folder under `root`), submodule-exact:
    `from brainseg.metrics import functional` names brainseg.metrics.functional, and
    `from brainseg.metrics import dice_score` names brainseg.metrics (its __init__)."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}
    graph: Graph = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in files:  # `import brainseg.x.y` names brainseg.x.y
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def part(module: str) -> str:
    """`brainseg.metrics.functional` -> `metrics`; `brainseg.cli` -> `cli`; `brainseg` -> ``. A
    package's `__main__` is part of its package: its command stands in the package's layer."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int:
    for index, parts in enumerate(LAYERS):
        if part(module) in parts:
            return index
    raise AssertionError(f"{module}: its part {part(module)!r} has no place in LAYERS")


def upward_imports(graph: Graph) -> list[str]:
    """Every import of another part of the same or a higher layer."""
    found = []
    for module, edges in sorted(graph.items()):
        for target, line in sorted(edges.items()):
            if part(module) != part(target) and layer(target) >= layer(module):
                found.append(
                    f"{module} (layer {layer(module)}), line {line}, imports {target} "
                    f"(layer {layer(target)})"
                )
    return found


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def brainseg_graph() -> Graph:
    return import_graph(PROJECT, "brainseg")


def test_every_part_has_a_layer(brainseg_graph: Graph) -> None:
    for module in brainseg_graph:
        layer(module)


def test_nothing_imports_a_part_of_its_own_or_a_higher_layer(brainseg_graph: Graph) -> None:
    """E.g. evaluation imports nothing from reporting, prediction nothing from training, and
    cli/config nothing above them."""
    assert upward_imports(brainseg_graph) == []


def test_no_modules_import_each_other_in_a_loop(brainseg_graph: Graph) -> None:
    assert cycles(brainseg_graph) == []


def test_metrics_do_not_depend_on_postprocessing(brainseg_graph: Graph) -> None:
    """The per-volume Metric takes a `postprocess` callable instead."""
    assert not [
        (m, t)
        for m, edges in brainseg_graph.items()
        for t in edges
        if part(m) == "metrics" and part(t) == "postprocessing"
    ]


def test_the_rules_catch_an_upward_import_and_a_loop(tmp_path: Path) -> None:
    package = tmp_path / "brainseg"
    (package / "evaluation").mkdir(parents=True)
    (package / "reporting").mkdir()
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("")
    (package / "evaluation" / "__init__.py").write_text("")
    (package / "reporting" / "__init__.py").write_text("")
    (package / "reporting" / "scores.py").write_text("from brainseg.evaluation import folds\n")
    (package / "evaluation" / "folds.py").write_text(
        "import brainseg.errors\n\n\ndef f():\n    from brainseg.reporting.scores import x\n"
    )
    graph = import_graph(tmp_path, "brainseg")
    assert graph["brainseg.evaluation.folds"] == {
        "brainseg.errors": 1,
        "brainseg.reporting.scores": 5,
    }
    assert upward_imports(graph) == [
        "brainseg.evaluation.folds (layer 10), line 5, imports brainseg.reporting.scores (layer 11)"
    ]
    assert cycles(graph) == [["brainseg.evaluation.folds", "brainseg.reporting.scores"]]
