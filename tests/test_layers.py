"""The package's imports follow the pipeline: a module imports only from its own layer or the layers before it
(shared contracts → data → embed / index → grounding / catalog → rewards → policy → rl → synth → diffusion →
retrieve → eval / serve → jobs / cli), and no two modules import each other, directly or in a circle.
Imports inside functions count: a call-time import is still a dependency."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "r4t"

# Each top-level module or subpackage of r4t, by layer; a module may import from its own layer and earlier ones.
LAYERS = [
    {"errors", "io", "config", "storage", "metrics", "optim_state", "stats"},  # shared contracts
    {"data"},
    {"embed", "index"},
    {"grounding", "catalog"},
    {"rewards"},
    {"policy"},
    {"rl"},
    {"synth"},
    {"diffusion"},
    {"retrieve"},
    {"eval", "serve", "bench"},
    {"jobs", "cli"},
]
# Deliberate exceptions, (importer, imported) as dotted module names: none today.
ALLOWED_BACKWARD: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The r4t modules a file imports, anywhere in it (`from r4t.x import name` counts r4t.x.name when that is a
    module, else r4t.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("r4t"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("r4t")}
    return found - {"r4t"}


def _layer(module: str) -> int:
    unit = module.split(".")[1]
    for i, members in enumerate(LAYERS):
        if unit in members:
            return i
    raise AssertionError(f"{module}: r4t.{unit} is in no layer of tests/test_layers.py; place it")


def test_every_import_runs_down_the_pipeline():
    modules = _modules()
    backward = [f"{importer} imports {imported}" for importer, path in sorted(modules.items()) if importer != "r4t"
                for imported in sorted(_imports(path, modules))
                if _layer(imported) > _layer(importer) and (importer, imported) not in ALLOWED_BACKWARD]
    assert backward == []


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {m: _imports(p, modules) & set(modules) for m, p in modules.items()}
    cycles, state = [], {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_layer_check_sees_a_backward_import(tmp_path):
    """The checker itself: a data module importing the diffusion stage is reported."""
    fake = tmp_path / "fake.py"
    fake.write_text("def f():\n    from r4t.diffusion.edm import precondition\n")
    modules = _modules()
    imported = _imports(fake, modules)
    assert imported == {"r4t.diffusion.edm"} and _layer("r4t.diffusion.edm") > _layer("r4t.data.schema")


# r4t.config, one module per stage, follows the pipeline inside itself too (the package's __init__ gathers them).
CONFIG_ORDER = ["common", "loading", "data", "policy", "rl", "rllib", "synth", "diffusion", "eval", "pipeline"]


def test_config_modules_import_only_earlier_stages():
    modules = _modules()
    inside = sorted(m for m in modules if m.startswith("r4t.config."))
    assert [m.split(".")[2] for m in inside] == sorted(CONFIG_ORDER), "place a new r4t.config module in CONFIG_ORDER"
    rank = {f"r4t.config.{name}": i for i, name in enumerate(CONFIG_ORDER)}
    backward = [f"{m} imports {imported}" for m in inside for imported in sorted(_imports(modules[m], modules))
                if imported.startswith("r4t.config") and rank.get(imported, len(rank)) >= rank[m]]
    assert backward == []
