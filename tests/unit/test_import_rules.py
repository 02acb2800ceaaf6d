"""Import rules between the repository's layers, read from the source with ``ast``.

- The services (``services/gateway``, ``services/gpu_exporter``) are installed alone on the hosts:
  they never import ``citadel``, ``deploys`` or each other.
- citadel's model (``citadel/model``, ``citadel/components``, ``citadel/dashboards``,
  ``citadel/loader``, ``citadel/render.py``) never imports pyinfra, ``deploys``, the lab, the CLI or
  ``citadel.artifacts`` (downloads), nor a network client module: not directly (at any level,
  functions included), and not through what its module-level imports load.
- ``deploys`` never imports the lab or the CLI.
- No import cycle among module-level imports (citadel, deploys, each service).

Imports under ``if TYPE_CHECKING:`` are never executed and are not edges of the runtime graph;
they still may not name a forbidden module directly. A rule that must bend names its exception
in ``EXCEPTIONS`` with the reason; an exception that no longer matches anything fails.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "citadel": ROOT / "citadel",
    "deploys": ROOT / "deploys",
    "citadel_gateway": ROOT / "services" / "gateway" / "citadel_gateway",
    "citadel_gpu_exporter": ROOT / "services" / "gpu_exporter" / "citadel_gpu_exporter",
}
SERVICES = ("citadel_gateway", "citadel_gpu_exporter")
MODEL = (
    "citadel.model",
    "citadel.components",
    "citadel.dashboards",
    "citadel.loader",
    "citadel.render",
)
MODEL_FORBIDDEN = (
    "pyinfra",
    "deploys",
    "citadel.lab",
    "citadel.cli",
    "citadel.artifacts",
    # network clients: rendering never touches the network
    "urllib.request",
    "http.client",
    "socket",
    "requests",
    "httpx",
    "aiohttp",
    "paramiko",
)
DEPLOYS_FORBIDDEN = ("citadel.lab", "citadel.cli")

# (importer, imported) -> why the rule bends there. Kept short: each one is a debt.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("citadel.components.model_server", "citadel.wheels"): (
        "Config.llamacpp_model_path looks up the pinned GGUF (citadel.wheels.GGUF_PACKAGES, a "
        "table, no I/O) inside the method; citadel.wheels loads citadel.artifacts (sha256_of). "
        "Importing the model does not load it; moving the GGUF pins next to the model removes "
        "this exception."
    ),
}


@dataclass(frozen=True)
class Imp:
    importer: str
    target: str  # dotted module name: internal modules resolved, external ones as written
    path: Path
    line: int
    where: str  # "module" (runs at import time), "function", "typing" (TYPE_CHECKING only)

    def at(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _module_files() -> Iterator[tuple[str, Path]]:
    for pkg, base in PACKAGES.items():
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [pkg, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


@cache
def modules() -> dict[str, Path]:
    return dict(_module_files())


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_from(importer: str, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base_parts = importer.split(".")
        if not _is_package(importer):
            base_parts = base_parts[:-1]
        base_parts = base_parts[: len(base_parts) - (node.level - 1)]
        base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    known = modules()
    targets = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        targets.append(sub if sub in known else base)
    return targets


def _walk(importer: str, path: Path, node: ast.AST, where: str) -> Iterator[Imp]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield Imp(importer, alias.name, path, child.lineno, where)
        elif isinstance(child, ast.ImportFrom):
            if child.module == "__future__":
                continue
            for target in dict.fromkeys(_resolve_from(importer, child)):
                yield Imp(importer, target, path, child.lineno, where)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(importer, path, child, "function" if where == "module" else where)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(importer, path, ast.Module(body=[stmt], type_ignores=[]), "typing")
            for stmt in child.orelse:
                yield from _walk(importer, path, ast.Module(body=[stmt], type_ignores=[]), where)
        else:
            yield from _walk(importer, path, child, where)


@cache
def imports() -> tuple[Imp, ...]:
    out: list[Imp] = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        out.extend(_walk(name, path, tree, "module"))
    return tuple(out)


def _under(name: str, prefixes: Iterable[str]) -> str | None:
    for p in prefixes:
        if name == p or name.startswith(p + "."):
            return p
    return None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def module_edges() -> dict[str, tuple[Imp, ...]]:
    """Runtime import-time edges: module-level imports between the repository's modules."""
    edges: dict[str, list[Imp]] = {m: [] for m in modules()}
    for imp in imports():
        if imp.where == "module" and imp.target in modules() and imp.target != imp.importer:
            edges[imp.importer].append(imp)
    return {k: tuple(v) for k, v in edges.items()}


def loaded_by(start: str) -> dict[str, list[Imp]]:
    """Every module importing ``start`` loads (internal and external), with one import chain."""
    known = modules()
    chains: dict[str, list[Imp]] = {start: []}
    todo = [start]
    while todo:
        mod = todo.pop()
        for imp in (i for i in imports() if i.importer == mod and i.where == "module"):
            for target in [*_parents(imp.target), imp.target]:
                if target in chains:
                    continue
                chains[target] = [*chains[mod], imp]
                if target in known:
                    todo.append(target)
    return chains


def _chain(chain: list[Imp]) -> str:
    return " -> ".join(f"{i.target} ({i.at()})" for i in chain)


def _excepted(imp: Imp, used: set[tuple[str, str]]) -> bool:
    key = (imp.importer, imp.target)
    if key in EXCEPTIONS:
        used.add(key)
        return True
    return False


def _model_modules() -> list[str]:
    return [m for m in modules() if _under(m, MODEL)]


# ---------------------------------------------------------------------------------- the rules


def test_the_scan_sees_the_layers() -> None:
    mods = modules()
    for expected in (
        "citadel.render",
        "citadel.loader",
        "citadel.model.cluster",
        "citadel.components.gateway",
        "citadel.dashboards",
        "citadel.wheels.store",
        "deploys.node_exporter",
        "deploys.facts.postgres",
        "citadel_gateway.app",
        "citadel_gpu_exporter.cli",
    ):
        assert expected in mods
    assert any(i.where == "function" for i in imports())
    assert any(i.where == "typing" for i in imports())
    # relative imports are resolved to module names
    assert any(
        i.importer == "citadel_gateway.app" and i.target == "citadel_gateway.config"
        for i in imports()
    )


def test_services_never_import_citadel_deploys_or_each_other() -> None:
    bad = []
    for imp in imports():
        own = _under(imp.importer, SERVICES)
        if own is None:
            continue
        forbidden = ("citadel", "deploys", *(s for s in SERVICES if s != own))
        hit = _under(imp.target, forbidden)
        if hit:
            bad.append(f"{imp.at()}: {imp.importer} imports {imp.target} ({imp.where})")
    assert not bad, "a service is installed alone on its host:\n" + "\n".join(bad)


def test_model_never_imports_pyinfra_deploys_lab_cli_artifacts_or_network_directly() -> None:
    used: set[tuple[str, str]] = set()
    bad = []
    for imp in imports():
        if not _under(imp.importer, MODEL):
            continue
        hit = _under(imp.target, MODEL_FORBIDDEN)
        if hit and not _excepted(imp, used):
            bad.append(f"{imp.at()}: {imp.importer} imports {imp.target} ({imp.where})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", _model_modules())
def test_importing_the_model_loads_nothing_forbidden(module: str) -> None:
    chains = loaded_by(module)
    bad = [f"{m}: {_chain(chain)}" for m, chain in chains.items() if _under(m, MODEL_FORBIDDEN)]
    assert not bad, f"importing {module} loads:\n" + "\n".join(bad)


def test_the_models_function_level_imports_load_nothing_forbidden() -> None:
    """A deferred import is a run-time dependency: what it loads obeys the same rule."""
    used: set[tuple[str, str]] = set()
    bad = []
    for imp in imports():
        if not _under(imp.importer, MODEL) or imp.where != "function":
            continue
        if imp.target not in modules():
            continue
        reached = [m for m in loaded_by(imp.target) if _under(m, MODEL_FORBIDDEN)]
        if reached and not _excepted(imp, used):
            bad.append(f"{imp.at()}: {imp.importer} imports {imp.target}, which loads {reached}")
    assert not bad, "\n".join(bad)


def test_deploys_never_import_the_lab_or_the_cli() -> None:
    bad = []
    for imp in imports():
        if _under(imp.importer, ("deploys",)) and _under(imp.target, DEPLOYS_FORBIDDEN):
            bad.append(f"{imp.at()}: {imp.importer} imports {imp.target} ({imp.where})")
    for mod in (m for m in modules() if _under(m, ("deploys",))):
        for m, chain in loaded_by(mod).items():
            if _under(m, DEPLOYS_FORBIDDEN) and chain:
                bad.append(f"importing {mod} loads {m}: {_chain(chain)}")
    assert not bad, "\n".join(sorted(set(bad)))


def test_every_exception_is_still_needed() -> None:
    used: set[tuple[str, str]] = set()
    for imp in imports():
        if _under(imp.importer, MODEL):
            _excepted(imp, used)
    stale = set(EXCEPTIONS) - used
    assert not stale, f"exceptions that match no import any more (remove them): {sorted(stale)}"


# ---------------------------------------------------------------------------------- cycles


def find_cycles(edges: dict[str, tuple[Imp, ...]]) -> list[list[Imp]]:
    """One cycle (as its import statements) per strongly connected component (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[set[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for imp in edges.get(v, ()):
            w = imp.target
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    for v in sorted(edges):
        if v not in index:
            strong(v)

    cycles = []
    for comp in sccs:
        start = min(comp)
        # shortest path start -> ... -> start inside the component (BFS)
        prev: dict[str, Imp] = {}
        frontier = [start]
        found: Imp | None = None
        while frontier and found is None:
            nxt = []
            for v in frontier:
                for imp in edges.get(v, ()):
                    if imp.target not in comp:
                        continue
                    if imp.target == start:
                        found = imp
                        break
                    if imp.target not in prev:
                        prev[imp.target] = imp
                        nxt.append(imp.target)
                if found:
                    break
            frontier = nxt
        assert found is not None
        path = [found]
        while path[0].importer != start:
            path.insert(0, prev[path[0].importer])
        cycles.append(path)
    return cycles


def test_no_import_cycle_at_module_level() -> None:
    cycles = find_cycles(module_edges())
    shown = [" -> ".join([c[0].importer, *(f"{i.target} ({i.at()})" for i in c)]) for c in cycles]
    assert not cycles, "import cycles at module level:\n" + "\n".join(shown)


def test_find_cycles_reports_a_cycle() -> None:
    p = ROOT / "x.py"
    edges = {
        "a": (Imp("a", "b", p, 1, "module"),),
        "b": (Imp("b", "c", p, 2, "module"),),
        "c": (Imp("c", "a", p, 3, "module"), Imp("c", "d", p, 4, "module")),
        "d": (),
    }
    (cycle,) = find_cycles(edges)
    assert [i.importer for i in cycle] == ["a", "b", "c"]
    assert cycle[-1].target == "a"
    assert find_cycles({"a": (Imp("a", "b", p, 1, "module"),), "b": ()}) == []
