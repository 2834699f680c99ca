"""The code's shape and the pipeline's declared inputs, checked from the source itself.

* No import cycle among ``src/facelab`` modules, subpackages included (imports inside functions
  count too), and the stage modules (``src/facelab/pipeline/``) are leaves: no facelab module
  imports one, nor the ``facelab.pipeline`` package.
* Every stage's ``dvc.yaml`` deps are exactly its script, the facelab modules it imports
  (transitively, from ``stages/<stage>.py``), and its data files as declared in
  ``facelab.data.artifacts.STAGE_INPUTS``: edit any file a stage reads and ``dvc status`` names it.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

from facelab.data.artifacts import STAGE_INPUTS

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src" / "facelab"
STAGE_PACKAGE = "facelab.pipeline"
STAGE_MODULES = {f"{STAGE_PACKAGE}.{name}" for name in ("prepare", "augment", "train", "evaluate", "combine")}
IMPORTERS = {"__import__", "import_module"}


def module_file(module: str) -> Path | None:
    """src/facelab/x.py for facelab.x, src/facelab/p/x.py for facelab.p.x (a package's __init__.py for
    facelab or facelab.p), None if not a facelab module."""
    parts = module.split(".")
    if parts[0] != "facelab":
        return None
    path = PACKAGE.joinpath(*parts[1:])
    if path.with_suffix(".py").exists():
        return path.with_suffix(".py")
    if (path / "__init__.py").exists():
        return path / "__init__.py"
    return None


def imported_modules(path: Path) -> set[str]:
    """The facelab modules a file imports anywhere in it (top level, in functions, or by a constant string)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", getattr(node.func, "attr", None)) in IMPORTERS
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for name in names:
            if module_file(name) is not None:
                # importing facelab.p.x runs facelab/__init__.py and facelab/p/__init__.py first
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) - {module_name(path)} for path in PACKAGE.rglob("*.py")}


def closure(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_facelab():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_stage_package_holds_the_stage_modules():
    stage_package = module_file(STAGE_PACKAGE).parent
    assert {module_name(path) for path in stage_package.glob("*.py") if path.name != "__init__.py"} == STAGE_MODULES


def test_stage_modules_are_leaves():
    stages = STAGE_MODULES | {STAGE_PACKAGE}
    importers = {module: sorted(imported & stages) for module, imported in import_graph().items() if imported & stages}
    assert not importers, f"modules importing a stage module (move the shared piece out): {importers}"


# --- dvc.yaml ---------------------------------------------------------------------------------


def stage_script(cmd: str) -> Path:
    words = shlex.split(cmd)
    scripts = [w for w in words if w.startswith("stages/") and w.endswith(".py")]
    assert len(scripts) == 1, f"cannot find the stage script in {cmd!r}"
    return REPO / scripts[0]


def expected_deps(stage: str, cmd: str, graph: dict[str, set[str]]) -> set[str]:
    script = stage_script(cmd)
    modules = closure(imported_modules(script), graph)
    code = {script.relative_to(REPO).as_posix()} | {module_file(m).relative_to(REPO).as_posix() for m in modules}
    return code | {Path(p).as_posix() for p in STAGE_INPUTS[stage].values()}


def dep_problems(dvc_yaml: dict, graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for stage, spec in dvc_yaml["stages"].items():
        declared = {str(d) for d in spec.get("deps", [])}
        expected = expected_deps(stage, spec["cmd"], graph)
        if missing := sorted(expected - declared):
            problems.append(f"{stage}: dvc.yaml deps miss {missing}")
        if extra := sorted(declared - expected):
            problems.append(
                f"{stage}: dvc.yaml deps list {extra}, which the stage neither imports nor declares "
                "in facelab.data.artifacts.STAGE_INPUTS"
            )
    return problems


def test_every_stage_declares_every_module_and_file_it_reads():
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert set(dvc_yaml["stages"]) == set(STAGE_INPUTS)
    problems = dep_problems(dvc_yaml, import_graph())
    assert not problems, "\n".join(problems)


def test_the_check_catches_an_undeclared_module_and_file():
    """The check fails on the dvc.yaml of before: train_emotion without augmentation code, evaluate
    without the training sets its baselines read."""
    dvc_yaml = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = dvc_yaml["stages"]["train_emotion"]["deps"]
    deps.remove("src/facelab/data/augmentation.py")
    dvc_yaml["stages"]["evaluate"]["deps"].remove("data/prepared/emotion_train.npz")
    problems = "\n".join(dep_problems(dvc_yaml, import_graph()))
    assert "train_emotion: dvc.yaml deps miss ['src/facelab/data/augmentation.py']" in problems
    assert "evaluate: dvc.yaml deps miss ['data/prepared/emotion_train.npz']" in problems


def test_a_stage_cannot_read_an_undeclared_file():
    from facelab.data.artifacts import stage_files

    files = stage_files("combine")
    assert files["champions"] == Path("models/champions.json")
    with pytest.raises(KeyError, match="does not declare"):
        files["emotion_test"]


# --- layering ---------------------------------------------------------------------------------

# What each part of facelab may import (besides itself): docs/architecture.md draws it. "root" is the small
# core beside the packages (errors, atomic writes, config, formats, profiles, the stage runner, optional
# extras); the command line (facelab.cli) sits on top and may import any package but the stage modules.
LAYERS: dict[str, set[str]] = {
    "root": {"root"},
    "data": {"root"},
    "nn": {"root", "data"},
    "tracking": {"root"},
    "reports": {"root", "data", "tracking"},
    "serve": {"root", "data", "nn", "tracking", "reports"},
    "pipeline": {"root", "data", "nn", "tracking", "reports", "serve"},
    "cli": {"root", "data", "nn", "tracking", "reports", "serve"},
}
ROOT_MODULE_LIMIT = 10
MODULE_LINE_LIMIT = 450


def part(module: str) -> str:
    """The layer a facelab module belongs to: its package under facelab, "cli", or "root"."""
    parts = module.split(".")
    if module == "facelab.cli":
        return "cli"
    if len(parts) > 2 or (len(parts) == 2 and (PACKAGE / parts[1]).is_dir()):
        return parts[1]
    return "root"


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, imported in sorted(graph.items()):
        mine = part(module)
        for other in sorted(imported):
            theirs = part(other)
            is_package_face = other.count(".") == 1 and theirs != "root"  # importing facelab.x runs x/__init__.py
            if theirs != mine and theirs not in LAYERS[mine] and not is_package_face:
                problems.append(f"{module} ({mine}) imports {other} ({theirs})")
    return problems


def test_every_module_belongs_to_a_known_layer():
    assert {part(module) for module in import_graph()} <= set(LAYERS)


def test_imports_follow_the_layering_rule():
    problems = layering_problems(import_graph())
    assert not problems, "imports against the layering rule (docs/architecture.md):\n" + "\n".join(problems)


def test_the_layering_check_catches_an_upward_import():
    graph = import_graph()
    graph["facelab.data.readers"] = graph["facelab.data.readers"] | {"facelab.tracking.store"}
    graph["facelab.nn.resnet"] = graph["facelab.nn.resnet"] | {"facelab.serve.photos"}
    assert layering_problems(graph) == [
        "facelab.data.readers (data) imports facelab.tracking.store (tracking)",
        "facelab.nn.resnet (nn) imports facelab.serve.photos (serve)",
    ]


def test_every_package_says_what_it_holds_and_what_it_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc or init.parent.name == "pipeline", f"{init}: no 'May import' in its docstring"


def test_the_root_stays_small_and_modules_short():
    root = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(root) <= ROOT_MODULE_LIMIT, f"{len(root)} modules beside the packages: {sorted(root)}"
    long = {
        str(p.relative_to(REPO)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MODULE_LINE_LIMIT
    }
    assert not long, f"modules over {MODULE_LINE_LIMIT} lines: {long}"


# --- the package map of docs/architecture.md --------------------------------------------------

ARCHITECTURE = REPO / "docs" / "architecture.md"
MAP_START, MAP_END = "<!-- package-map:start -->", "<!-- package-map:end -->"


def package_map(graph: dict[str, set[str]]) -> str:
    """docs/architecture.md's picture of the packages, drawn from the import graph: one box per layer with its
    modules, one arrow per pair of layers where a module of one imports a module of the other."""
    modules: dict[str, list[str]] = {}
    for module in graph:
        name = module.rsplit(".", 1)[-1]
        if module == "facelab" or (module.count(".") == 1 and part(module) != "root" and part(module) != "cli"):
            continue  # a package's face
        modules.setdefault(part(module), []).append(name)
    arrows = sorted(
        {(part(m), part(o)) for m, imported in graph.items() for o in imported if part(m) != part(o)}
        - {(p, "root") for p in LAYERS}  # every layer uses the root: drawn once, in words
    )
    lines = ["```mermaid", "flowchart TD"]
    for layer in LAYERS:
        if layer == "cli":
            lines.append('    cli["<b>facelab.cli</b><br/>the facelab command"]')
            continue
        names = " · ".join(sorted(modules.get(layer, [])))
        title = "facelab (root)" if layer == "root" else f"facelab.{layer}"
        lines.append(f'    {layer}["<b>{title}</b><br/>{names}"]')
    lines += [f"    {a} --> {b}" for a, b in arrows]
    lines.append("```")
    return "\n".join(lines)


def test_the_architecture_page_draws_todays_packages():
    """Redraw with: python tests/code/test_structure.py (prints the block to paste between the markers)."""
    text = ARCHITECTURE.read_text()
    drawn = text.split(MAP_START, 1)[1].split(MAP_END, 1)[0].strip()
    assert drawn == package_map(import_graph()), "docs/architecture.md's package map is out of date: redraw it"


if __name__ == "__main__":
    print(package_map(import_graph()))
