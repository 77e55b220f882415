"""The import rules of docs/architecture.md, checked on the source (not on what happens to be
imported at run time):

- dependencies flow one way: lra_base (the base layer) imports nothing of the project;
  attentions/ and tasks/ import only lra_base and themselves; lra/core imports only those and
  itself; the commands in lra/ never import the CLI; only the CLI (and run_lra.py) sits on top;
- no import cycle between the project's modules;
- project modules are imported at the top of a file; an import inside a function is a heavy
  optional package deferred on purpose (and its line says so), never a project module;
- the project's own modules are never loaded by name (`__import__`, importlib), except by the
  two registries discovering their own files;
- no module in lra/ over 400 lines, no function over 60 lines or 8 parameters.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lra_base", "attentions", "tasks", "lra")
# Optional at run time (a bare GPU box may lack them), so imported where used.
DEFERRED_OK = {"matplotlib", "submitit", "datasets", "huggingface_hub", "triton"}
# Packages that find their own modules by file name: the registries.
DISCOVERY = {"attentions", "tasks"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    files["run_lra"] = ROOT / "run_lra.py"
    return files


FILES = project_files()


def resolve(name: str) -> str | None:
    """The project module an imported name refers to (the longest prefix that is a module)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in FILES:
            return ".".join(parts[:i])
    return None


def imports(path: Path):
    """(imported project module or third-party top name, is it inside a function, line, source line)."""
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(node) if n is not node}
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            target = resolve(name)
            yield target or name.split(".")[0], target is not None, id(node) in inside, node.lineno, lines[node.lineno - 1]


def layer(module: str) -> str:
    if module in ("lra.cli", "run_lra"):
        return "cli"
    if module == "lra_base" or module.startswith("lra_base."):
        return "base"
    top = module.split(".")[0]
    if top in ("attentions", "tasks"):
        return top
    return "core" if module == "lra.core" or module.startswith("lra.core.") else "command"


ALLOWED = {  # layer -> the layers it may import
    "base": {"base"},
    "attentions": {"base", "attentions"},
    "tasks": {"base", "tasks"},
    "core": {"base", "attentions", "tasks", "core"},
    "command": {"base", "attentions", "tasks", "core", "command"},
    "cli": {"base", "attentions", "tasks", "core", "command", "cli"},
}


def graph() -> dict[str, set[str]]:
    return {m: {t for t, ours, deferred, _, _ in imports(p) if ours and not deferred and t != m}
            for m, p in FILES.items()}


@pytest.mark.parametrize("module", sorted(FILES))
def test_dependencies_flow_one_way(module):
    for target, ours, _, line, text in imports(FILES[module]):
        if ours and target != module:
            assert layer(target) in ALLOWED[layer(module)], (
                f"{FILES[module].relative_to(ROOT)}:{line}: a {layer(module)} module may not import "
                f"{target} ({layer(target)}); see docs/architecture.md")


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(g[m]):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(FILES))
def test_imports_at_the_top_unless_an_optional_package(module):
    for target, ours, deferred, line, text in imports(FILES[module]):
        if not deferred:
            continue
        where = f"{FILES[module].relative_to(ROOT)}:{line}"
        assert not ours, f"{where}: imports the project module {target} inside a function; import it at the top"
        assert target in DEFERRED_OK, (f"{where}: imports {target} inside a function; import it at the top "
                                       f"(only optional packages {sorted(DEFERRED_OK)} may be deferred)")
        previous = FILES[module].read_text().splitlines()[line - 2]
        assert "deferred on purpose" in text + previous, f"{where}: say why {target} is deferred ('deferred on purpose')"


@pytest.mark.parametrize("module", sorted(FILES))
def test_no_project_module_is_loaded_by_name(module):
    source = FILES[module].read_text()
    assert "__import__(" not in source, f"{FILES[module].relative_to(ROOT)} uses __import__"
    if "import_module(" in source:
        assert module in DISCOVERY, f"{FILES[module].relative_to(ROOT)} loads modules by name; import them instead"


@pytest.mark.parametrize("module", sorted(m for m in FILES if m == "lra" or m.startswith("lra.")))
def test_harness_modules_and_functions_stay_small(module):
    path = FILES[module]
    source = path.read_text()
    assert len(source.splitlines()) <= 400, f"{path.relative_to(ROOT)} has {len(source.splitlines())} lines (> 400)"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg not in ("self", "cls")]
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            assert node.end_lineno - node.lineno < 60, f"{where} is {node.end_lineno - node.lineno + 1} lines (> 60)"
            assert len(params) <= 8, f"{where} takes {len(params)} parameters (> 8)"


def test_the_rules_can_fail():
    """The checks above see a violation when there is one (a test that cannot fail is a defect)."""
    assert layer("tasks.base") == "tasks" and "core" not in ALLOWED["tasks"]
    assert resolve("lra.core.step.TrainStep") == "lra.core.step" and resolve("torch.nn") is None
    assert "lra.core.step" in graph()["lra.train"]
