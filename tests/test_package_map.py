"""The package map of docs/architecture.md is what the code does: every import between packages is
one its table allows, no import circle exists under shared/, services/ or inferq/, no module of
shared/ serves one program only, and every Lua script sits beside the module that wraps it.

The rules are read from the table itself, so the document and the code cannot drift apart; each
check also runs on a small made-up graph that breaks it, so a check that stopped seeing anything
would fail here too."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

TOPS = ("shared", "services", "inferq")
PROGRAMS = ("services.dispatcher", "services.inference", "services.ingest", "inferq")


def package_map() -> dict[str, set[str]]:
    """{package: the packages it may import} from docs/architecture.md's table; `shared/*` is
    every package of shared/."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z/_]+)` \| [^|]+ \| ([^|]+) \|$", table, re.M)
    packages = {name.replace("/", ".") for name, _ in rows}
    shared = {p for p in packages if p.startswith("shared.")}
    allowed = {}
    for name, may in rows:
        names = set(re.findall(r"`([a-z/_*]+)`", may))
        allowed[name.replace("/", ".")] = (shared if "shared/*" in names else set()) | {
            n.replace("/", ".") for n in names if n != "shared/*"
        }
    return allowed


def package_of(module: str) -> str:
    """shared.X and services.X are packages of the map; inferq is one."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] in ("shared", "services") and len(parts) > 1 else parts[0]


def modules() -> dict[str, Path]:
    out = {}
    for top in TOPS:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the modules of inferq it imports}, lazy and TYPE_CHECKING imports included."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                assert node.level == 0, f"{name}: relative import"
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in mods else node.module)
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def forbidden_imports(graph: dict[str, set[str]], allowed: dict[str, set[str]]) -> list[str]:
    out = []
    for module, deps in sorted(graph.items()):
        here = package_of(module)
        for dep in sorted(deps):
            there = package_of(dep)
            if there != here and there not in allowed.get(here, set()):
                out.append(f"{module} imports {dep} ({here} may not import {there})")
    return out


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, deps = work[-1]
            dep = next(deps, None)
            if dep is not None:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(sorted(graph.get(dep, ())))))
                elif dep in on_stack:
                    low[node] = min(low[node], index[dep])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


def users(graph: dict[str, set[str]], programs=PROGRAMS) -> dict[str, set[str]]:
    """{module: the programs that reach it through their own modules' imports}."""
    out: dict[str, set[str]] = {}
    for program in programs:
        todo = [m for m in graph if package_of(m) == program]
        seen: set[str] = set()
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        for module in seen:
            out.setdefault(module, set()).add(program)
    return out


def single_program_modules(graph: dict[str, set[str]], programs=PROGRAMS) -> list[str]:
    reached = users(graph, programs)
    shared = [m for m in graph if m.startswith("shared.") and m.count(".") >= 2]  # modules, not packages
    return sorted(
        f"{m} is used by {sorted(reached.get(m, ())) or 'nothing'}" for m in shared if len(reached.get(m, ())) < 2
    )


def test_the_map_covers_every_package_and_shared_holds_only_its_packages():
    allowed = package_map()
    assert {package_of(m) for m in modules()} - {"shared", "services"} == set(allowed)
    entries = {p.name for p in (ROOT / "shared").iterdir() if p.name != "__pycache__"}
    assert entries == {"__init__.py"} | {p.split(".")[1] for p in allowed if p.startswith("shared.")}
    assert len(entries) <= 12


def test_every_import_between_packages_is_one_the_map_allows():
    assert forbidden_imports(import_graph(), package_map()) == []


def test_no_import_circle():
    assert circles(import_graph()) == []


def test_no_module_of_shared_serves_one_program_only():
    assert single_program_modules(import_graph()) == []


def test_every_lua_script_sits_beside_the_module_that_wraps_it():
    registered = re.compile(r'scripts\.register\(\s*\w+,\s*__name__,\s*"(\w+)"\)')
    scripts = [p for top in ("shared", "services") for p in (ROOT / top).rglob("lua/*.lua")]
    assert len(scripts) >= 20
    for path in scripts:
        wrappers = [p for p in path.parent.parent.glob("*.py") if path.stem in registered.findall(p.read_text())]
        assert wrappers, f"{path.relative_to(ROOT)} has no wrapper in {path.parent.parent.relative_to(ROOT)}"
    for path in (p for top in TOPS for p in (ROOT / top).rglob("*.py")):
        for name in registered.findall(path.read_text()):
            assert (path.parent / "lua" / f"{name}.lua").is_file(), f"{path.relative_to(ROOT)} wraps a missing {name}"


def test_each_check_sees_what_breaks_it():
    graph = {
        "shared.core.a": {"shared.redis.b"},  # core may import nothing
        "shared.redis.b": {"shared.redis.c"},
        "shared.redis.c": {"shared.redis.b"},  # a circle
        "shared.wire.d": set(),  # used by one program only
        "services.ingest.x": {"shared.wire.d", "shared.redis.b", "services.dispatcher.y"},
        "services.dispatcher.y": {"shared.redis.b"},
    }
    allowed = {
        "shared.core": set(),
        "shared.redis": {"shared.core"},
        "shared.wire": {"shared.core"},
        "services.ingest": {"shared.core", "shared.redis", "shared.wire", "services.ingest"},
        "services.dispatcher": {"shared.core", "shared.redis", "shared.wire", "services.dispatcher"},
    }
    assert forbidden_imports(graph, allowed) == [
        "services.ingest.x imports services.dispatcher.y (services.ingest may not import services.dispatcher)",
        "shared.core.a imports shared.redis.b (shared.core may not import shared.redis)",
    ]
    assert circles(graph) == [["shared.redis.b", "shared.redis.c"]]
    programs = ("services.ingest", "services.dispatcher")
    assert single_program_modules(graph, programs) == [
        "shared.core.a is used by nothing",
        "shared.wire.d is used by ['services.ingest']",
    ]


def test_no_function_is_longer_than_60_lines():
    """Longer ones read as one block; they split into named steps."""
    long = []
    for path in (p for top in TOPS for p in (ROOT / top).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert long == []
