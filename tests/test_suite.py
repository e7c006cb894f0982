"""The test suite's own rules: torch's threads sleep while they wait, in this process and every
process a test starts, and the stored greedy references match the cases that make them."""
from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

from golden.make_golden import CASES, load_golden

TESTS = Path(__file__).resolve().parent
PROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}


def test_omp_wait_policy_is_passive_before_torch_is_imported():
    conftest = sys.modules.get("conftest")
    assert conftest is not None and Path(conftest.__file__).resolve() == TESTS / "conftest.py"
    assert not conftest.TORCH_IMPORTED_BEFORE_CONFTEST, "something imported torch before tests/conftest.py set it"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


def _process_calls_without_env(source: str) -> list[int]:
    """Lines of ``subprocess.<call>(...)`` without an ``env=`` (git commands need none)."""
    missing = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"
                and node.func.attr in PROCESS_CALLS):
            continue
        first = node.args[0] if node.args else None
        runs_git = (isinstance(first, ast.List) and first.elts and isinstance(first.elts[0], ast.Constant)
                    and first.elts[0].value == "git")
        if not runs_git and not any(k.arg == "env" for k in node.keywords):
            missing.append(node.lineno)
    return missing


def test_every_process_a_test_starts_gets_an_environment():
    """Each gets ``processes.child_env(...)`` (or the ``subprocess_env`` fixture): OMP_WAIT_POLICY=PASSIVE."""
    missing = [f"{path.name}:{line}" for path in sorted(TESTS.glob("*.py"))
               for line in _process_calls_without_env(path.read_text(encoding="utf-8"))]
    assert missing == [], f"processes started without env=child_env(...): {missing}"
    known_bad = "import subprocess\nsubprocess.run(['git', 'status'])\nsubprocess.Popen([sys.executable, 'app.py'])\n"
    assert _process_calls_without_env(known_bad) == [3]


def test_stored_greedy_references_match_their_cases():
    """Edit CASES in tests/golden/make_golden.py, then run it: the stored file must follow."""
    stored = load_golden()
    assert stored["dtype"] == "float32" and stored["device"] == "cpu"
    assert {name: (case["source"], case["max_new_tokens"]) for name, case in stored["cases"].items()} == {
        name: (source, max_new) for name, (source, max_new) in CASES.items()}
    for name, case in stored["cases"].items():
        assert case["ids"] and len(case["ids"]) <= case["max_new_tokens"], name


def test_the_app_sets_passive_waiting_before_torch_unless_told_otherwise(repo_root, monkeypatch):
    import subprocess

    from processes import child_env

    # Importing app.py imports no torch, so main() sets the policy before anything reads it.
    probe = "import sys, app; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True,
                          timeout=300, env=child_env())
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
    import app

    monkeypatch.delenv("OMP_WAIT_POLICY")
    app.passive_waiting_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    app.passive_waiting_threads()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"  # the user's choice wins
