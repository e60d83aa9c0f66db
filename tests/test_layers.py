"""The package's layers: imports point downwards only, and no module imports itself back.

Every ``import`` of the package is read from the source (those inside functions too), so a
deferred import cannot hide an upward dependency or a cycle. The layers, from the bottom:

=========  ==================================================================
errors     exceptions and warnings (and ``datasets``, packaged data only)
model      study set, MNI grid and masks, coordinate spaces
stats      pure array kernels: NumPy, SciPy, Numba; no Dask, xarray or files
io         readers, Zarr store, NIfTI
null       randomization graphs (Dask)
analyses   map-level analyses: recreate, mean, jackknife, linear models, ...
inference  thresholds, clusters, atlas labels, bias tables
report     exports, plots, summaries, citations
testing    simulation helpers for tests, benchmarks, the example data and ``daskmeta simulate``
app        typed configuration, workflow, Dask client, command line
=========  ==================================================================
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daskmeta"

LAYERS = ("errors", "model", "stats", "io", "null", "analyses", "inference", "report", "testing", "app")
#: Subpackages and modules that sit on a layer of another name.
ALIASES = {"datasets": "errors", "__main__": "app"}
#: Third-party packages the pure kernels must not import.
NOT_IN_KERNELS = ("dask", "distributed", "xarray", "zarr", "nibabel", "nilearn", "matplotlib", "pandas")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in a file, relative imports resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # ``from daskmeta.stats import _pooling_jit`` imports a module too
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _graph() -> dict[str, set[tuple[int, str]]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[tuple[int, str]]] = {}
    for name, path in modules.items():
        graph[name] = {(line, target) for line, target in _imports(path) if target in modules}
    return graph


def layer(module: str) -> str:
    """The layer of a module of the package (``daskmeta.null.randomization`` -> ``null``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    top = ALIASES.get(parts[1], parts[1])
    return top if top in LAYERS else "errors" if parts[1] == "errors" else top


def test_every_module_has_a_layer():
    unknown = sorted(m for m in _graph() if layer(m) not in (*LAYERS, "api"))
    assert not unknown, f"modules outside every layer: {unknown}; add them to a subpackage of {LAYERS}"


def test_imports_point_downwards():
    upward = []
    for module, targets in _graph().items():
        if layer(module) == "api":
            continue
        for line, target in sorted(targets):
            if target == "daskmeta":  # ``from daskmeta import __version__``
                continue
            if LAYERS.index(layer(target)) > LAYERS.index(layer(module)):
                upward.append(f"{module}:{line} imports {target} ({layer(module)} -> {layer(target)})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    # a package's __init__ re-exporting its own modules is not a cycle of the code
    graph = {m: {t for _, t in targets if not (m == "daskmeta" or t == m.rpartition(".")[0]
                                             or t == "daskmeta")}
             for m, targets in _graph().items()}
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_cycle_detection_finds_a_planted_cycle():
    # positive control: the checker must see an indirect cycle and ignore a chain
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_upward_import_is_detected(tmp_path):
    # positive control: a kernel module importing an analysis is flagged by the rule
    planted = tmp_path / "daskmeta" / "stats" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("from daskmeta.analyses.means import mean\n")
    targets = [t for _, t in _imports_at(planted, tmp_path / "daskmeta")]
    assert "daskmeta.analyses.means" in targets
    assert LAYERS.index(layer("daskmeta.analyses.means")) > LAYERS.index(layer("daskmeta.stats.planted"))


def _imports_at(path: Path, package: Path) -> list[tuple[int, str]]:
    global PACKAGE
    saved, PACKAGE = PACKAGE, package
    try:
        return _imports(path)
    finally:
        PACKAGE = saved


@pytest.mark.parametrize("path", sorted((PACKAGE / "stats").glob("*.py")), ids=lambda p: p.name)
def test_kernels_import_no_dask_xarray_or_files(path):
    heavy = sorted({target for _, target in _imports(path) if target.split(".")[0] in NOT_IN_KERNELS})
    assert not heavy, f"{path.name} is a pure kernel module but imports {heavy}"


def test_the_engine_branch_is_written_once():
    # analyses hand their engine to daskmeta.null.engines.null_blocks; only the report reads
    # the engine of a stored result (also of stores written before an engine was retired)
    branching = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "engines.py" or path.parent.name == "report":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "engine ==" in line or "engine !=" in line or "engine in (" in line:
                branching.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not branching, "engine branches outside daskmeta/null/engines.py:\n" + "\n".join(branching)
