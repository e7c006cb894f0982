"""The layers go one way: modules/core never imports the UI, the API, Gradio or FastAPI."""
from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = ("gradio", "fastapi", "starlette", "uvicorn", "modules.ui", "modules.api")


def imported_names(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module or "")
    return names


def test_core_imports_no_ui_api_or_web_framework():
    core = Path(__file__).resolve().parents[1] / "modules" / "core"
    files = sorted(core.rglob("*.py"))
    assert len(files) > 40
    offending = [f"{path.relative_to(core)}: {name}" for path in files for name in imported_names(path)
                 if name.startswith(FORBIDDEN)]
    assert offending == []


def test_the_check_sees_an_offending_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from modules.ui.state import control_inputs\n    import gradio as gr\n")
    assert [n for n in imported_names(sample) if n.startswith(FORBIDDEN)] == ["modules.ui.state", "gradio"]
