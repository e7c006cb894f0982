"""start_linux.sh for real: a clean copy in a temporary folder installs, serves the page and answers a chat.

The copy gets the project's files (what git tracks, plus new files git does not
ignore) and nothing else: no installer_files/, no models/. The first start
creates a fresh virtual environment and installs into it; pip's cache and the
llama.cpp wheel cache (~/.cache/corral-wheels) are reused, as on any machine
that installed once before, so nothing is compiled twice. The second start must
skip every install step and serve the page much sooner.

Slow (a few minutes); deselect with ``-m "not slow"``.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from processes import child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400),
              pytest.mark.skipif(sys.platform == "win32", reason="start_linux.sh is a bash script")]

QUESTION = "What is the capital of France?"
CHAT_ENDPOINTS = ("/chat_send", "/respond")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_project(repo_root: Path, target: Path) -> Path:
    """The files a fresh clone would have (tracked, plus untracked files not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo_root, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = repo_root / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


class StartedApp:
    """start_linux.sh running in its own process group, its output in a log file."""

    def __init__(self, folder: Path, port: int, env: dict, log: Path, extra: list[str]) -> None:
        self.port, self.log = port, log
        self.started = time.perf_counter()
        with log.open("wb") as out:
            self.process = subprocess.Popen(["bash", str(folder / "start_linux.sh"), "--listen-port", str(port), *extra],
                                            cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for_page(self, timeout: float) -> float:
        """Seconds from the start until the page answers; fails with the script's output if it dies."""
        url = f"http://127.0.0.1:{self.port}/"
        while time.perf_counter() - self.started < timeout:
            if self.process.poll() is not None:
                pytest.fail(f"start_linux.sh exited with {self.process.returncode}:\n{self.output[-6000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200 and b"gradio" in response.read().lower():
                        return time.perf_counter() - self.started
            except OSError:
                pass
            time.sleep(1)
        pytest.fail(f"no page at {url} after {timeout:.0f} s:\n{self.output[-6000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


def ask(port: int, text: str) -> str:
    """Send one chat message through the page's own endpoint, greedy and short; the assistant's reply."""
    from gradio_client import Client

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    name = next((e for e in CHAT_ENDPOINTS if e in endpoints), None)
    assert name, f"no chat endpoint among {sorted(endpoints)}"
    wanted = {"message": text, "do_sample": False, "max_new_tokens": 48}
    args = []
    for param in endpoints[name]["parameters"]:
        label = (param.get("label") or "").split(" (")[0].lower()
        args.append(wanted.pop(label) if label in wanted else param.get("parameter_default"))
    assert "message" not in wanted, f"no message parameter on {name}: {endpoints[name]['parameters']}"
    result = client.submit(*args, api_name=name).result(timeout=600)
    return _assistant_text(result)


def _assistant_text(result: object) -> str:
    """The last assistant message in whatever the endpoint returned (a Chatbot value among outputs)."""
    outputs = result if isinstance(result, (list, tuple)) else [result]
    for output in outputs:
        if isinstance(output, list) and output and isinstance(output[-1], dict) and output[-1].get("role") == "assistant":
            content = output[-1].get("content")
            if isinstance(content, list):
                return "".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    raise AssertionError(f"no assistant message in the reply: {str(result)[:2000]}")


def test_start_script_installs_serves_and_second_start_skips_installs(repo_root, tmp_path):
    folder = copy_project(repo_root, tmp_path / "corral")
    with_llama = importlib.util.find_spec("llama_cpp") is not None  # then its wheel is in the cache
    env = child_env({k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "CORRAL_LLAMA_CPP"}},
                    GRADIO_ANALYTICS_ENABLED="False", CORRAL_LLAMA_CPP="1" if with_llama else "0")

    # Greedy, so the answer is the model's best one and does not depend on a random draw.
    first = StartedApp(folder, _free_port(), env, tmp_path / "first.log", ["--preset", "Deterministic"])
    try:
        first_seconds = first.wait_for_page(timeout=1800)
        assert "Paris" in ask(first.port, QUESTION)
    finally:
        first.stop()
    assert (folder / "installer_files" / "env" / "bin" / "python").is_file()
    assert "installing the requirements" in first.output

    # Second start: nothing installed again. With llama.cpp, chat through the GGUF this time.
    extra = ["--model", "SmolLM2-135M-Instruct-Q4_1.gguf"] if with_llama else []
    second = StartedApp(folder, _free_port(), env, tmp_path / "second.log", extra)
    try:
        second_seconds = second.wait_for_page(timeout=600)
        # Not "Paris" here: llama.cpp computes the Q4_1 file with 8-bit activations, and with
        # the template's system prompt its greedy answer differs (plain llama_cpp gives the same).
        assert ask(second.port, QUESTION).strip()
    finally:
        second.stop()
    out = second.output
    print(f"first start {first_seconds:.0f} s, second start {second_seconds:.1f} s")
    assert "environment up to date" in out and "installing the requirements" not in out
    assert "creating the Python environment" not in out and "dequantizing" not in out
    if with_llama:
        assert "llama-cpp-python 0.3.36 already installed" in out and "compiling" not in out
        assert "Loaded SmolLM2-135M-Instruct-Q4_1.gguf with llama.cpp" in out
    assert second_seconds < first_seconds / 2, (first_seconds, second_seconds)
