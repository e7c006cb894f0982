"""The remote loader, end to end: a second Corral serves the API; this one uses it as its model.

The second Corral's API runs in this process on the session's shared model (the remote loader
sees only HTTP); one test chains a real ``app.py --loader remote`` process onto it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from api_helpers import GREEDY_QUESTION, default_context, free_port, run_engine, watch_generations
from modules.api.server import start_api
from modules.core.chat import ChatSettings, Turn
from modules.core.config import DEFAULT_MODEL_NAME, AppConfig, LoaderOptions
from modules.core.context import build_context
from modules.core.engine import Engine, GenerationRequest
from modules.core.errors import ModelLoadError
from modules.core.generation import chat_request
from modules.core.loaders.remote_http import RemoteServer, base_url
from modules.core.loaders.remote_loader import (RemoteBackend, RemoteCatalog, ServerModel, first_remote_model,
                                                sampler_fields)
from modules.core.sampling import SamplerParams
from processes import child_env

MAX = 24
START_TIMEOUT = 240


@contextmanager
def corral_process(repo_root: Path, scratch: Path, *flags: str) -> Iterator[str]:
    """``app.py --api ...`` in its own process; yields its API URL once it serves a model."""
    api_port, ui_port = free_port(), free_port()
    log_path = scratch / "app.log"
    command = [sys.executable, "app.py", "--api", "--api-port", str(api_port), "--listen-port", str(ui_port),
               "--user-data-dir", str(scratch / "user_data"), *flags]
    env = child_env(GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=repo_root, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{api_port}"
    try:
        _wait_for_model(process, url, log_path)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_for_model(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"The Corral process exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=2).json()["data"]:
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    pytest.fail(f"The Corral process did not serve a model in {START_TIMEOUT} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def second(default_model_dir, default_model, tmp_path_factory):
    """A second Corral's API serving the default model on loopback: its own context and server in this
    process, on the session's loaded model (the remote loader sees only HTTP). A real second process is
    started by ``test_app_started_with_loader_remote_serves_the_remote_model``."""
    server_ctx = default_context(default_model_dir.parent, tmp_path_factory.mktemp("second-corral"),
                                 shared=default_model)
    handle = start_api(server_ctx)
    yield server_ctx, handle.url
    handle.stop()
    server_ctx.models.unload()


@pytest.fixture(scope="module")
def remote_url(second) -> str:
    return second[1]


@pytest.fixture(scope="module")
def ctx(remote_url, default_model_dir, tmp_path_factory):
    """This process: no local model; the remote one loaded through the model manager."""
    ctx = default_context(default_model_dir.parent, tmp_path_factory.mktemp("first-corral"), load=False)
    ctx.models.load(DEFAULT_MODEL_NAME, overrides={"loader": "remote", "remote_url": remote_url})
    yield ctx
    ctx.models.unload()


def test_remote_models_join_the_model_list(remote_url, default_model_dir, tmp_path):
    config = AppConfig(models_dir=default_model_dir.parent, user_data_dir=tmp_path,
                       loader=LoaderOptions(remote_url=remote_url + "/v1/"))
    listed = build_context(config).registry.list()
    remote = [m for m in listed if m.kind == "remote"]
    assert [m.name for m in remote] == [DEFAULT_MODEL_NAME]
    assert remote[0].settings["loader"] == "remote" and remote[0].context_length == 8192
    assert any(m.kind == "folder" and m.name == DEFAULT_MODEL_NAME for m in listed)  # local models stay
    assert first_remote_model(LoaderOptions(remote_url=remote_url)) == DEFAULT_MODEL_NAME


def test_chat_through_the_remote_equals_the_second_process(ctx, remote_url):
    backend = ctx.engine.backend
    assert backend.info.loader == "remote" and backend.info.details["server"] == "corral"
    params = SamplerParams(do_sample=False, max_new_tokens=MAX)
    request, plan = chat_request(ctx, [], Turn(user_message=GREEDY_QUESTION), ChatSettings(), params)
    messages = [{"role": "user", "content": GREEDY_QUESTION}]
    shown = httpx.post(f"{remote_url}/v1/internal/chat-prompt", json={"messages": messages}, timeout=60).json()
    assert plan.prompt == shown["prompt"]  # the prompt is built here exactly as the server would build it
    text, deltas = run_engine(ctx, request)
    direct = httpx.post(f"{remote_url}/v1/chat/completions", timeout=120,
                        json={"messages": messages, "max_tokens": MAX, "temperature": 0}).json()
    assert text.strip() and text == direct["choices"][0]["message"]["content"]
    assert sum(1 for d in deltas if d.text) > 2  # streamed piece by piece
    assert deltas[-1].prompt_tokens == direct["usage"]["prompt_tokens"]  # exact counts from the server


def test_stop_closes_the_remote_stream(ctx, second):
    params = SamplerParams(do_sample=False, max_new_tokens=1000, ban_eos_token=True)
    request, _ = chat_request(ctx, [], Turn(user_message="Write a very long story."), ChatSettings(), params)
    texts, last = [], None
    with watch_generations(second[0].engine) as server:
        for delta in ctx.engine.generate(request):
            last = delta
            if delta.text:
                texts.append(delta.text)
                if len(texts) == 3:
                    request.cancel.set()  # what the Stop button does
        assert last.finish_reason == "cancelled" and len(texts) < 10
        # The server saw the stream close and let go of its model (1000 tokens would take minutes here).
        assert server.finished.wait(120), "the server went on generating after the stream was closed"
    assert server.last[0].finish_reason == "cancelled" and server.last[0].completion_tokens < 100
    after, _ = run_engine(ctx, chat_request(ctx, [], Turn(user_message="Hi"), ChatSettings(),
                                            SamplerParams(do_sample=False, max_new_tokens=3))[0])
    assert after


def test_a_plain_openai_server_gets_openai_fields_and_the_rest_is_reported(remote_url):
    """The generic path (any OpenAI-compatible server), tried against the second Corral as such a server."""
    engine = Engine()
    engine.set_backend(RemoteBackend(RemoteServer(remote_url), "openai", ServerModel(DEFAULT_MODEL_NAME, 8192)))
    params = SamplerParams(do_sample=False, max_new_tokens=6, mirostat_mode=2, top_k=40, presence_penalty=0.5)
    deltas = list(engine.generate(GenerationRequest(prompt="The sky is", params=params)))
    warning = " ".join(deltas[0].warnings)
    assert "mirostat_mode" in warning and "top_k" in warning and "presence_penalty" not in warning
    assert "".join(d.text for d in deltas).strip()
    assert engine.backend.count_tokens("x" * 40) == 10  # estimated: characters / 4
    engine.set_backend(None)


def test_sampler_fields_per_server_kind():
    params = SamplerParams(temperature=0.7, top_k=40, min_p=0.05, repetition_penalty=1.1, mirostat_mode=2, seed=7,
                           logit_bias={5: -100.0})
    assert sampler_fields(params, "openai") == {"temperature": 0.7, "seed": 7, "logit_bias": {"5": -100.0}}
    vllm = sampler_fields(params, "vllm")
    assert vllm["top_k"] == 40 and vllm["min_p"] == 0.05 and vllm["repetition_penalty"] == 1.1
    assert "mirostat" not in vllm
    llama = sampler_fields(params, "llama.cpp")
    assert llama["repeat_penalty"] == 1.1 and llama["repeat_last_n"] == -1 and llama["mirostat"] == 2
    assert sampler_fields(params.replace(do_sample=False), "openai")["temperature"] == 0.0


def test_unreachable_server_is_a_clear_error(default_model_dir, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    catalog = RemoteCatalog(dead, None, default_model_dir.parent)
    assert catalog.list() == [] and "did not answer" in catalog.problem
    ctx = default_context(default_model_dir.parent, tmp_path, load=False)
    with pytest.raises(ModelLoadError, match="did not answer"):
        ctx.models.load("anything", overrides={"loader": "remote", "remote_url": dead})
    assert base_url("http://host:8000/v1/") == "http://host:8000"


def test_app_started_with_loader_remote_serves_the_remote_model(remote_url, repo_root, tmp_path):
    """``app.py --loader remote --remote-url URL`` loads the server's first model and serves it on (a chain)."""
    messages = [{"role": "user", "content": GREEDY_QUESTION}]
    body = {"messages": messages, "max_tokens": MAX, "temperature": 0}
    direct = httpx.post(f"{remote_url}/v1/chat/completions", json=body, timeout=120).json()
    with corral_process(repo_root, tmp_path, "--loader", "remote", "--remote-url", remote_url) as chained_url:
        listed = httpx.get(f"{chained_url}/v1/models").json()["data"]
        assert [m["id"] for m in listed] == [DEFAULT_MODEL_NAME] and listed[0]["loader"] == "remote"
        chained = httpx.post(f"{chained_url}/v1/chat/completions", json=body, timeout=120).json()
    assert chained["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
