"""The package's structural rules, read from the source with ``ast`` (nothing is imported):
imports between its modules form no cycle, lazy imports inside functions included; no
module imports a private (``_name``) name from a sibling; library files stay under the
line limit; and only ``lstm_kernels/scripted/`` scripts with TorchScript.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "lstm_kernels"
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
MODULES = sorted(FILES)


def _trees():
    return {m: ast.parse(p.read_text(encoding="utf-8")) for m, p in FILES.items()}


TREES = _trees()


def _package_imports(module: str):
    """(line, imported module, imported names) for each import of this package's modules."""
    is_pkg = FILES[module].name == "__init__.py"
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - (node.level - (1 if is_pkg else 0))]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "lstm_kernels" or target.startswith("lstm_kernels."):
                yield node.lineno, target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "lstm_kernels" or a.name.startswith("lstm_kernels."):
                    yield node.lineno, a.name, []


def _dependencies(module: str) -> set:
    """Modules that importing ``module`` runs: each imported module (or submodule named in a
    ``from`` import) and the packages above it that ``module`` is not itself inside."""
    deps = set()
    for _, target, names in _package_imports(module):
        hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in FILES] or [target]
        for hit in hits:
            parts = hit.split(".")
            for i in range(1, len(parts) + 1):
                pkg = ".".join(parts[:i])
                if pkg in FILES and pkg != module and not module.startswith(pkg + "."):
                    deps.add(pkg)
    return deps


def test_no_import_cycles():
    graph = {m: _dependencies(m) for m in FILES}
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycle = path[path.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("module", MODULES)
def test_no_private_names_imported_from_siblings(module):
    bad = [f"line {line}: from {target} import {n}"
           for line, target, names in _package_imports(module) for n in names
           if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in FILES]
    assert not bad, f"{module} imports private names: {bad}"


@pytest.mark.parametrize("module", MODULES)
def test_library_files_stay_under_the_line_limit(module):
    lines = len(FILES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{FILES[module]} has {lines} lines (limit {MAX_LINES}): split it by purpose"


@pytest.mark.parametrize("module", MODULES)
def test_only_the_scripted_package_calls_torch_jit_script(module):
    if module == "lstm_kernels.scripted" or module.startswith("lstm_kernels.scripted."):
        return
    calls = [n.lineno for n in ast.walk(TREES[module])
             if isinstance(n, ast.Attribute) and n.attr in ("script", "optimized_execution")
             and isinstance(n.value, ast.Attribute) and n.value.attr == "jit"]
    assert not calls, f"{module} uses torch.jit.script at lines {calls}"
