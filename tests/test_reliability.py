"""Regression tests for what a hostile-client probe found (issue 17), on a tiny model served over HTTP."""
from __future__ import annotations

import os
import shutil
import threading
from types import SimpleNamespace

import httpx
import pytest

from modules.api.server import start_api
from modules.core.config import AppConfig, LoaderOptions, ServerOptions
from modules.core.context import build_context
from modules.core.errors import ModelLoadError
from modules.core.load_checks import option_problems
from modules.core.sampling import SamplerParams, param_problem
from modules.ui.admin_guard import admin_refusal, listen_warning
from api_helpers import wait_until
from tiny_models import build_tiny_llama

TINY = "tiny-llama"
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("reliability")
    models = root / "models"
    build_tiny_llama(models / TINY, context=4096)
    broken = models / "broken-weights"
    shutil.copytree(models / TINY, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # header intact, tensors cut
    config = AppConfig(models_dir=models, user_data_dir=root / "user_data", characters_dir=root / "characters",
                       loader=LoaderOptions(cpu=True, dtype="float32"),
                       server=ServerOptions(api_port=0, max_request_bytes=64 * 1024, max_prompt_tokens=2000))
    ctx = build_context(config)
    ctx.models.load(TINY)
    api = start_api(ctx)
    with httpx.Client(base_url=api.url, timeout=120) as client:
        yield ctx, api, client
    api.stop()


def bad(client: httpx.Client, body: dict, param: str, path: str = CHAT) -> dict:
    reply = client.post(path, json=body) if not isinstance(body, bytes) else client.post(path, content=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and param.split(".")[0] in error["message"], error
    return error


@pytest.mark.parametrize("field,value,param", [
    ("temperature", 1e-300, "temperature"),
    ("repetition_penalty", 1e-300, "repetition_penalty"),
    ("seed", 10**30, "seed"),
    ("seed", -7, "seed"),
    ("logit_bias", {"99999999": 5}, "logit_bias"),
    ("logit_bias", {"²": 5}, "logit_bias"),
    ("logit_bias", {"١٢": 5}, "logit_bias"),  # Arabic-Indic digits: isdigit() says yes, int() too
    ("logit_bias", {"1" * 5000: 5}, "logit_bias"),
    ("logit_bias", {"-1": 5}, "logit_bias"),
    ("logit_bias", {"5": 1e300}, "logit_bias"),
    ("top_k", 10**30, "top_k"),
    ("mirostat_tau", 1e308, "mirostat_tau"),
    ("truncation_length", 10**20, "truncation_length"),
    ("dry_multiplier", 1e300, "dry_multiplier"),
])
def test_bad_sampler_values_are_400_naming_the_field(served, field, value, param):
    ctx, _, client = served
    bad(client, {"messages": HI, "max_tokens": 2, field: value}, param)
    assert ctx.engine.busy == 0


def test_logit_bias_past_the_vocabulary_is_400(served):
    ctx, _, client = served
    vocab = ctx.engine.backend.info.vocab_size
    assert vocab > 0
    error = bad(client, {"messages": HI, "max_tokens": 2, "logit_bias": {str(vocab): 5}}, "logit_bias")
    assert str(vocab - 1) in error["message"]
    ok = client.post(CHAT, json={"messages": HI, "max_tokens": 2, "logit_bias": {str(vocab - 1): 5}})
    assert ok.status_code == 200


def test_nan_and_infinity_literals_are_400(served):
    _, _, client = served
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": ' + literal + b"}"
        bad(client, body, "temperature")


def test_the_server_still_answers_after_bad_values(served):
    _, _, client = served
    reply = client.post(CHAT, json={"messages": HI, "max_tokens": 3, "temperature": 0})
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None


def test_param_problem_names_the_field():
    assert param_problem(SamplerParams()) is None
    assert param_problem(SamplerParams(temperature=0)) is None
    assert param_problem(SamplerParams(temperature=1e-9))[0] == "temperature"
    assert param_problem(SamplerParams(temperature=float("nan")))[0] == "temperature"
    assert param_problem(SamplerParams(logit_bias={-3: 1.0}))[0] == "logit_bias"


@pytest.mark.parametrize("args,words", [
    ({"dtype": "junk"}, "dtype"), ({"fast_decode": "junk"}, "fast_decode"), ({"quant_type": "junk"}, "quant_type"),
    ({"load_in_4bit": True, "load_in_8bit": True}, "4-bit or 8-bit"), ({"load_in_4bit": "junk"}, "load_in_4bit"),
    ({"n_ctx": -5}, "n_ctx"), ({"compute_dtype": 3}, "compute_dtype"), ({"gpu_memory": "10GiB"}, "gpu_memory"),
])
def test_a_refused_load_keeps_the_working_model(served, args, words):
    ctx, _, client = served
    reply = client.post("/v1/internal/model/load", json={"model_name": TINY, "args": args})
    assert reply.status_code == 400 and words in reply.json()["error"]["message"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [TINY]
    assert client.post(CHAT, json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_a_failed_load_restores_the_previous_model(served):
    ctx, _, client = served
    reply = client.post("/v1/internal/model/load", json={"model_name": "broken-weights"})
    assert reply.status_code == 400
    assert f"{TINY}, is loaded again" in reply.json()["error"]["message"]
    assert ctx.models.loaded_name == TINY
    assert client.post(CHAT, json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_a_failed_load_with_nothing_before_stays_a_clear_error(tmp_path):
    models = tmp_path / "models"
    build_tiny_llama(models / TINY)
    (models / TINY / "model.safetensors").write_bytes((models / TINY / "model.safetensors").read_bytes()[:4000])
    ctx = build_context(AppConfig(models_dir=models, loader=LoaderOptions(cpu=True, dtype="float32")))
    with pytest.raises(ModelLoadError):
        ctx.models.load(TINY)
    assert ctx.models.current is None


def test_option_problems_lists_every_bad_option():
    problems = option_problems(LoaderOptions(dtype="junk", quant_type="x", n_batch=0))
    assert len(problems) == 3 and any("dtype" in p for p in problems)
    assert option_problems(LoaderOptions()) == []


def test_non_streaming_hang_up_under_a_steady_stream_cancels(served, monkeypatch):
    """Tokens keep arriving; the client leaves after 1 s; the generation must end 'cancelled', not run out."""
    ctx, api, client = served
    finished: list = []
    original = ctx.engine.generate

    def recording(request):
        for delta in original(request):
            if delta.finish_reason:
                finished.append(delta)
            yield delta

    monkeypatch.setattr(ctx.engine, "generate", recording)
    body = {"messages": HI, "max_tokens": 4000, "temperature": 0, "ban_eos_token": True}
    with httpx.Client(base_url=api.url, timeout=httpx.Timeout(60, read=1.0)) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.post(CHAT, json=body)
    assert wait_until(lambda: finished, timeout=120)
    assert finished[0].finish_reason == "cancelled" and finished[0].completion_tokens < 4000
    assert client.post(CHAT, json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_streaming_hang_up_cancels(served):
    ctx, api, _ = served
    body = {"messages": HI, "max_tokens": 4000, "temperature": 0, "ban_eos_token": True, "stream": True}
    with httpx.Client(base_url=api.url, timeout=60) as client:
        with client.stream("POST", CHAT, json=body) as response:
            for count, _ in enumerate(response.iter_lines()):
                if count > 5:
                    break
    assert wait_until(lambda: ctx.engine.busy == 0, timeout=60)


def test_model_listing_reads_each_model_once(served, monkeypatch):
    import modules.core.registry as registry

    ctx, _, client = served
    calls: list[str] = []
    original = registry.describe_folder
    monkeypatch.setattr(registry, "describe_folder", lambda path: calls.append(path.name) or original(path))
    ctx.registry._described.clear()
    for _ in range(3):
        assert client.get("/v1/models/no-such-model").status_code == 404
        assert client.get("/v1/models").status_code == 200
    assert sorted(calls) == ["broken-weights", TINY]
    config = ctx.config.models_dir / TINY / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    ctx.registry.names()
    assert calls.count(TINY) == 2  # a changed file is read again


def test_request_and_prompt_caps(served):
    _, _, client = served
    huge = client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 100_000}]})
    assert huge.status_code == 413 and "--api-max-request-bytes" in huge.json()["error"]["message"]
    long = client.post(CHAT, json={"messages": [{"role": "user", "content": "fox jumps " * 3000}], "max_tokens": 1})
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
    assert client.post(CHAT, json={"messages": HI, "max_tokens": 2}).status_code == 200


def test_schema_is_behind_the_api_key(served):
    ctx, _, _ = served
    locked = start_api(ctx, ServerOptions(api_port=0, api_key="sekrit"))
    try:
        with httpx.Client(base_url=locked.url) as client:
            assert client.get("/openapi.json").status_code == 401
            assert client.get("/docs").status_code == 404 and client.get("/redoc").status_code == 404
            schema = client.get("/openapi.json", headers={"Authorization": "Bearer sekrit"})
            assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]
    finally:
        locked.stop()


def request_from(host: str) -> SimpleNamespace:
    return SimpleNamespace(client=SimpleNamespace(host=host), username=None)


def test_ui_admin_actions_follow_the_api_rule():
    local, remote = request_from("127.0.0.1"), request_from("192.168.1.20")
    open_net = ServerOptions(listen=True)
    assert admin_refusal(open_net, local, "load models") is None
    assert "--gradio-auth" in admin_refusal(open_net, remote, "load models")
    assert admin_refusal(ServerOptions(listen=True, gradio_auth=["a:b"]), remote, "load models") is None
    keyed = ServerOptions(listen=True, gradio_auth=["a:b"], admin_key="k")
    assert "--admin-key" in admin_refusal(keyed, remote, "unload models")
    assert admin_refusal(ServerOptions(share=True), local, "download models") is not None
    assert listen_warning(open_net) and "WITHOUT sign-in" in listen_warning(open_net)
    assert listen_warning(ServerOptions()) is None
    assert listen_warning(ServerOptions(listen=True, gradio_auth=["a:b"])) is None


def test_concurrent_streams_all_complete(served):
    _, api, _ = served
    results: list[int] = []

    def one() -> None:
        with httpx.Client(base_url=api.url, timeout=120) as client:
            reply = client.post(CHAT, json={"messages": HI, "max_tokens": 4, "stream": True})
            results.append(reply.status_code if reply.text.rstrip().endswith("[DONE]") else -1)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert results == [200] * 16
