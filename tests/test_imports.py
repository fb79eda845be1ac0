"""The module graph: `qilin.cli` imports the sub-CLIs and stage records, and nothing imports it back;
every module imports in a fresh interpreter; `qilin --help` imports no stage module."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every qilin module `path` imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("qilin")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qilin"):
            out.add(node.module)
    return out


def test_nothing_imports_the_cli_back():
    graph = {module_name(p): imports_of(p) for p in SRC.rglob("*.py")}
    importers = sorted(m for m, deps in graph.items() if "qilin.cli" in deps and m != "qilin.cli")
    assert importers == [], f"these import qilin.cli (a cycle with its sub-CLIs): {importers}"


def test_every_cli_module_imports_alone_and_help_loads_no_stage():
    modules = ["qilin.cli", "qilin.entry", "qilin.stages", "qilin.data.cli", "qilin.rag.cli", "qilin.eval.cli",
               "qilin.report"]
    for m in modules:
        subprocess.run([sys.executable, "-c", f"import {m}"], check=True, env={"PYTHONPATH": str(SRC)})
    code = ("import sys, qilin.cli as c; c._parser(); "
            "from qilin.stages import STAGES; "
            "loaded = [s.module for s in STAGES.values() if s.module in sys.modules and s.module != 'qilin.train.reward']; "
            "print(loaded); assert not loaded")
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC)})
