"""Fuzzing: random request bodies from the API's schemas and random files for the parsers (hypothesis),
and the short reliability catalogue (bench/reliability.py --quick) with its figures asserted."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.reliability import Report, run
from bench.reliability_api import Case, judge
from modules.api.schemas import ChatCompletionBody, CompletionBody
from modules.api.server import start_api
from modules.core.character_cards import parse_character_file
from modules.core.config import AppConfig, LoaderOptions, ServerOptions, read_settings_file
from modules.core.context import build_context
from modules.core.errors import CorralError
from modules.core.presets import params_from_dict
from modules.core.store import Store
from tiny_models import build_tiny_llama

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


def bodies(schema: type, base: dict) -> st.SearchStrategy[dict]:
    """A valid base body with some of the schema's fields (and a few unknown ones) set to random JSON."""
    names = st.sampled_from(sorted(schema.model_fields) + ["unknown_field"])
    return st.dictionaries(names, json_values, max_size=4).map(lambda extra: {**base, **extra})


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    build_tiny_llama(root / "models" / "tiny-llama", context=128)
    ctx = build_context(AppConfig(models_dir=root / "models", user_data_dir=root / "user_data",
                                  characters_dir=root / "characters", loader=LoaderOptions(cpu=True, dtype="float32"),
                                  server=ServerOptions(api_port=0)))
    ctx.models.load("tiny-llama")
    handle = start_api(ctx)
    with httpx.Client(base_url=handle.url, timeout=120) as client:
        yield client
    handle.stop()


def check(client: httpx.Client, path: str, body: dict) -> None:
    response = client.post(path, content=json.dumps(body))
    verdict = judge(Case("fuzz", "POST", path, None), response)
    assert verdict.problem is None, (body, verdict.problem)


@FUZZ
@given(body=bodies(ChatCompletionBody, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}))
def test_chat_completions_never_fail_on_our_side(api, body):
    check(api, "/v1/chat/completions", body)


@FUZZ
@given(body=bodies(CompletionBody, {"prompt": "Hi", "max_tokens": 2}))
def test_completions_never_fail_on_our_side(api, body):
    check(api, "/v1/completions", body)


@FUZZ
@given(messages=st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]),
                                         st.sampled_from(["user", "assistant", "system", "tool"]) | json_values,
                                         max_size=3), max_size=4))
def test_chat_prompt_with_random_messages(api, messages):
    check(api, "/v1/internal/chat-prompt", {"messages": messages})


def refused_clearly(call) -> None:
    try:
        call()
    except CorralError as err:
        assert len(str(err)) > 15


@FUZZ
@given(values=st.dictionaries(st.sampled_from(["temperature", "top_k", "seed", "stop", "logit_bias", "tfs_z",
                                               "do_sample", "max_tokens", "repetition_penalty", "unknown"]),
                              json_values, max_size=4))
def test_presets_from_random_mappings(values):
    refused_clearly(lambda: params_from_dict(values, "fuzz.yaml"))


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".yaml", ".json", ".png"]))
def test_character_files_from_random_bytes(data, suffix):
    refused_clearly(lambda: parse_character_file(f"x{suffix}", data))


@FUZZ
@given(card=st.dictionaries(st.sampled_from(["name", "greeting", "context", "first_mes", "description", "data",
                                             "char_name", "personality"]), json_values, max_size=5))
def test_character_files_from_random_mappings(card):
    refused_clearly(lambda: parse_character_file("x.json", json.dumps(card).encode()))


@FUZZ
@given(data=json_values | st.dictionaries(st.sampled_from(["format", "internal", "visible", "messages", "mode",
                                                          "title"]), json_values, max_size=4))
def test_chat_imports_from_random_json(data):
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "c.db") as store:
        refused_clearly(lambda: store.import_chat("local", data, None))


@FUZZ
@given(text=st.text(max_size=200))
def test_settings_files_from_random_text(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "settings.yaml"
        path.write_text(text, encoding="utf-8")
        refused_clearly(lambda: read_settings_file(path))


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> Report:
    return run(tmp_path_factory.mktemp("reliability-quick"), quick=True)


def test_quick_catalogue_tries_enough_kinds_of_bad_input(quick_report):
    assert len(quick_report.kinds) >= 200, quick_report.table()


def test_quick_catalogue_has_no_crash_no_500_and_clear_rejections(quick_report):
    assert not quick_report.crashes and not quick_report.server_errors and not quick_report.unclear, \
        quick_report.table()


def test_quick_catalogue_survives_every_fault_and_still_answers(quick_report):
    assert all(ok for _, ok, _ in quick_report.faults), quick_report.table()
    assert quick_report.streams[0] == quick_report.streams[1] > 0
    assert quick_report.still_answers
