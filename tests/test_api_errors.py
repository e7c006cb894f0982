"""API keys, every error answer, and a client that hangs up (the model must be free again at once)."""
from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from api_helpers import GREEDY_QUESTION, default_context, sse_lines, watch_generations
from modules.api.server import start_api
from modules.core.config import DEFAULT_MODEL_NAME, ServerOptions

API_KEY, ADMIN_KEY = "sk-test-user-key", "sk-test-admin-key"
CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "Hi"}]
# A reply that cannot end early: EOS banned, a long budget. Only a cancel stops it soon.
ENDLESS = {"messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 1000,
           "temperature": 0, "ban_eos_token": True}


@pytest.fixture(scope="module")
def served(default_model_dir, default_model, tmp_path_factory):
    ctx = default_context(default_model_dir.parent, tmp_path_factory.mktemp("api-errors-user"), shared=default_model)
    open_api = start_api(ctx)
    locked_api = start_api(ctx, ServerOptions(api_port=0, api_key=API_KEY, admin_key=ADMIN_KEY))
    yield ctx, open_api, locked_api
    open_api.stop()
    locked_api.stop()
    ctx.models.unload()


@pytest.fixture(scope="module")
def ctx(served):
    return served[0]


@pytest.fixture(scope="module")
def http(served):
    with httpx.Client(base_url=served[1].url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def locked(served):
    with httpx.Client(base_url=served[2].url, timeout=120) as client:
        yield client


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def assert_error(response: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def test_api_key_is_required(served, locked):
    assert_error(locked.get("/v1/models"), 401, code="invalid_api_key")
    assert_error(locked.get("/v1/models", headers=bearer("sk-wrong")), 401, code="invalid_api_key")
    assert_error(locked.post(CHAT, json={"messages": HI}, headers=bearer(API_KEY[:-1])), 401)
    assert locked.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
    assert locked.get("/v1/models", headers=bearer(ADMIN_KEY)).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served[2].url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
    good = openai.OpenAI(base_url=served[2].url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    reply = good.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=HI, max_tokens=2, temperature=0)
    assert reply.usage.completion_tokens <= 2


def test_load_and_unload_need_the_admin_key(locked):
    assert_error(locked.post("/v1/internal/model/unload", headers=bearer(API_KEY)), 401, code="invalid_api_key")
    assert_error(locked.post("/v1/internal/model/load", json={"model_name": DEFAULT_MODEL_NAME},
                             headers=bearer(API_KEY)), 401)
    # The admin key gets past the check: an unknown model is then a 404, not a 401.
    assert_error(locked.post("/v1/internal/model/load", json={"model_name": "no-such-model"},
                             headers=bearer(ADMIN_KEY)), 404, param="model_name")


BAD_REQUESTS = [
    ({"messages": HI, "temperature": "hot"}, "temperature"),
    ({"messages": "Hi"}, "messages"),
    ({"messages": HI, "max_tokens": 1.5}, "max_tokens"),
    ({"messages": HI, "temperature": 3}, "temperature"),
    ({"messages": HI, "top_p": 1.5}, "top_p"),
    ({"messages": HI, "max_tokens": 0}, "max_tokens"),
    ({"messages": HI, "presence_penalty": 5}, "presence_penalty"),
    ({"messages": HI, "n": 2}, "n"),
    ({"messages": HI, "stream": "yes"}, "stream"),
    ({"messages": HI, "logit_bias": {"hello": 1}}, "logit_bias"),
    ({"messages": HI, "logit_bias": {"5": 500}}, "logit_bias"),
    ({"messages": HI, "top_k": -1}, "top_k"),
    ({"messages": []}, "messages"),
    ({}, "messages"),
    ({"messages": [{"role": "wizard", "content": "Hi"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.0.content"),
    ({"messages": [{"role": "system", "content": "Only a system message."}]}, "messages"),
    ({"messages": HI, "mode": "karaoke"}, "mode"),
    ({"messages": HI, "instruction_format": "No Such Format"}, "instruction_format"),
    ({"messages": HI, "preset": "No Such Preset"}, "preset"),
]


@pytest.mark.parametrize("body,param", BAD_REQUESTS)
def test_bad_chat_requests_are_400(http, body, param):
    assert_error(http.post(CHAT, json=body), 400, param=param)


def test_malformed_json_and_non_objects_are_400(http):
    assert_error(http.post(CHAT, content=b'{"messages": [', headers={"Content-Type": "application/json"}), 400,
                 code="invalid_json")
    assert_error(http.post(CHAT, content=b"", headers={"Content-Type": "application/json"}), 400,
                 code="invalid_json")
    assert_error(http.post(CHAT, json=[1, 2]), 400, code="invalid_json")


def test_bad_completion_requests_are_400(http):
    assert_error(http.post("/v1/completions", json={"prompt": ["a", "b"]}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={"prompt": ""}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={"prompt": "a", "suffix": "b"}), 400, param="suffix")
    assert_error(http.post("/v1/completions", json={"prompt": 5}), 400, param="prompt")
    assert_error(http.post("/v1/internal/decode", json={"tokens": ["a"]}), 400, param="tokens.0")


def test_unknown_model_character_and_route_are_404(served, http):
    client = openai.OpenAI(base_url=served[1].url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=HI, max_tokens=2)
    assert err.value.body["code"] == "model_not_found" and DEFAULT_MODEL_NAME in err.value.body["message"]
    assert_error(http.get("/v1/models/gpt-4o"), 404, code="model_not_found")
    assert_error(http.post(CHAT, json={"messages": HI, "mode": "chat", "character": "Nobody Here"}), 404,
                 param="character")
    assert_error(http.get("/v1/nothing-here"), 404)


def test_unknown_fields_are_reported_not_fatal(http):
    reply = http.post(CHAT, json={"messages": HI, "max_tokens": 2, "temprature": 0.5}).json()
    assert any("temprature" in w for w in reply["warnings"])


def test_streaming_client_disconnect_frees_the_model(ctx, http):
    with watch_generations(ctx.engine) as watch:
        with http.stream("POST", CHAT, json={**ENDLESS, "stream": True}) as response:
            texts = []
            for data in sse_lines(response):
                delta = json.loads(data)["choices"][0]["delta"]
                if delta.get("content"):
                    texts.append(delta["content"])
                if len(texts) == 3:
                    break
        # The reply could run for 1000 tokens (minutes here); the hang-up must cancel it.
        assert watch.finished.wait(120), "the generation went on after the client hung up"
    last = watch.last[0]
    assert last.finish_reason == "cancelled" and last.completion_tokens < 100
    reply = http.post(CHAT, json={"messages": [{"role": "user", "content": GREEDY_QUESTION}], "max_tokens": 4,
                                  "temperature": 0})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] > 0


def test_non_streaming_client_disconnect_frees_the_model(ctx, served):
    host, port = httpx.URL(served[1].url).host, httpx.URL(served[1].url).port
    body = json.dumps(ENDLESS).encode()
    with watch_generations(ctx.engine) as watch:
        with socket.create_connection((host, port), timeout=120) as sock:  # a client that waits for the whole reply
            sock.sendall(f"POST {CHAT} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            assert watch.started.wait(120), "the request never started generating"
        # The client hung up. 1000 tokens would take minutes here: the generation must be cancelled.
        assert watch.finished.wait(120), "the generation went on after the client hung up"
    last = watch.last[0]
    assert last.finish_reason == "cancelled" and last.completion_tokens < 1000


def test_huge_max_tokens_is_clamped(http, ctx):
    reply = http.post(CHAT, json={"messages": [{"role": "user", "content": GREEDY_QUESTION}],
                                  "max_tokens": 10**15, "temperature": 0, "stop": ["."]})
    assert reply.status_code == 200
    assert reply.json()["usage"]["completion_tokens"] < ctx.engine.context_length


def test_unknown_loader_option_is_400_and_keeps_the_model(locked, ctx):
    assert_error(locked.post("/v1/internal/model/load", headers=bearer(ADMIN_KEY),
                             json={"model_name": DEFAULT_MODEL_NAME, "args": {"warp_speed": 9}}), 400)
    assert ctx.models.loaded_name == DEFAULT_MODEL_NAME


def test_no_model_is_503_until_one_is_loaded_over_the_api(locked, ctx):
    """Last in this module: it unloads the model and loads it back through the API.

    The load is a second, real one (not the session's shared model): loading over the API is what is tested.
    """
    headers = bearer(ADMIN_KEY)
    assert locked.post("/v1/internal/model/unload", headers=headers).json() == {"status": "ok"}
    assert ctx.engine.backend is None
    error = assert_error(locked.post(CHAT, json={"messages": HI}, headers=headers), 503, code="model_not_loaded")
    assert "No model is loaded" in error["message"]
    assert_error(locked.post("/v1/internal/token-count", json={"text": "x"}, headers=headers), 503)
    assert locked.get("/v1/models", headers=headers).json()["data"] == []
    loaded = locked.post("/v1/internal/model/load", headers=headers, timeout=300,
                         json={"model_name": DEFAULT_MODEL_NAME, "args": {"dtype": "float32", "cpu": True}})
    assert loaded.status_code == 200 and loaded.json()["model_name"] == DEFAULT_MODEL_NAME
    reply = locked.post(CHAT, json={"messages": HI, "max_tokens": 2}, headers=headers)
    assert reply.status_code == 200
