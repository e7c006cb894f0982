"""Bad API requests, generated from the request schemas, and how to judge the answers.

A *kind* of bad input is one (route, field, kind of bad value) or one malformed body shape;
each is sent once. The answer is judged: a 5xx (or an error event inside a 200 stream) is a
failure of ours; a 4xx must carry an OpenAI-shaped error whose message is a sentence and, for
a field, names it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from modules.api.schemas import ChatCompletionBody, CompletionBody, LoadBody, TextBody, TokensBody

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "Hi"}]

BAD_VALUES: dict[str, Any] = {
    "null": None, "true": True, "false": False, "text": "junk", "empty-text": "", "zero": 0, "negative": -1,
    "negative-float": -0.5, "huge-int": 10**30, "huge-negative-int": -(10**30), "tiny-float": 1e-300,
    "negative-tiny-float": -1e-300, "huge-float": 1e308, "list": [1, "a", None], "empty-list": [],
    "object": {"a": 1}, "empty-object": {}, "unicode-digits": "²³", "control-chars": "a\x00b\x1b[31m",
    "rtl-emoji": "\u202e😀ǅ", "long-text": "x" * 20_000, "nested-lists": [[[[[[1]]]]]],
    "list-of-objects": [{"role": "user"}], "numeric-text": "1e999",
}

# Whole-body shapes, sent to the chat route (and, in the long run, to every POST route).
RAW_BODIES: dict[str, bytes] = {
    "empty-body": b"", "null-body": b"null", "array-body": b"[]", "number-body": b"1", "string-body": b'"hi"',
    "truncated-json": b'{"messages": [{"role": "user", "content": "Hi"', "trailing-comma": b'{"messages": [],}',
    "single-quotes": b"{'messages': []}", "invalid-utf8": b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "utf8-bom": b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "Hi"}]}',
    "lone-surrogate": b'{"messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 1}',
    "deep-nesting": b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nan-literal": b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": NaN}',
    "infinity-literal": b'{"messages": [{"role": "user", "content": "Hi"}], "top_p": Infinity}',
    "huge-exponent": b'{"messages": [{"role": "user", "content": "Hi"}], "temperature": 1e999999}',
    "huge-integer-literal": b'{"messages": [{"role": "user", "content": "Hi"}], "seed": ' + b"9" * 5000 + b"}",
    "duplicate-keys": b'{"messages": [], "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}',
    "many-fields": json.dumps({"messages": HI, "max_tokens": 1, **{f"f{i}": i for i in range(5000)}}).encode(),
    "nul-in-key": b'{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "a\\u0000b": 1}',
    "unknown-role": json.dumps({"messages": [{"role": "tool", "content": "x"}]}).encode(),
    "no-user-message": json.dumps({"messages": [{"role": "system", "content": "x"}]}).encode(),
    "image-part": json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(),
    "part-without-type": json.dumps({"messages": [{"role": "user", "content": [{"text": "x"}]}]}).encode(),
    "oversized-body": json.dumps({"messages": [{"role": "user", "content": "x" * 2_000_000}]}).encode(),
    "n-two": json.dumps({"messages": HI, "n": 2}).encode(),
    "logprobs": json.dumps({"messages": HI, "logprobs": True}).encode(),
    "unknown-character": json.dumps({"messages": HI, "mode": "chat", "character": "Nobody"}).encode(),
    "traversal-character": json.dumps({"messages": HI, "mode": "chat", "character": "../../etc/passwd"}).encode(),
    "traversal-preset": json.dumps({"messages": HI, "preset": "../../../etc/passwd"}).encode(),
    "traversal-format": json.dumps({"messages": HI, "instruction_format": "/etc/passwd"}).encode(),
    "nul-preset": json.dumps({"messages": HI, "preset": "min_p\x00.yaml"}).encode(),
    "unicode-format": json.dumps({"messages": HI, "instruction_format": "Ａｌｐａｃａ"}).encode(),
    "long-preset-name": json.dumps({"messages": HI, "preset": "p" * 5000}).encode(),
    "unknown-model": json.dumps({"messages": HI, "model": "gpt-4o"}).encode(),
    "logit-bias-superscript": json.dumps({"messages": HI, "logit_bias": {"²": 5}}).encode(),
    "logit-bias-out-of-vocab": json.dumps({"messages": HI, "logit_bias": {"99999999": 5}}).encode(),
    "empty-prompt-completion": b"",  # sent to /v1/completions below
}

OTHER_REQUESTS: dict[str, tuple[str, str, bytes | None, dict]] = {
    "get-on-post-route": ("GET", CHAT, None, {}),
    "unknown-route": ("GET", "/v1/nothing", None, {}),
    "model-traversal": ("GET", "/v1/models/../../etc/passwd", None, {}),
    "model-encoded-traversal": ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", None, {}),
    "model-nul": ("GET", "/v1/models/a%00b", None, {}),
    "model-long-name": ("GET", "/v1/models/" + "m" * 4000, None, {}),
    "text-plain-content-type": ("POST", CHAT, b"hello", {"content-type": "text/plain"}),
    "declared-huge-length": ("POST", CHAT, b'{"messages": []}', {"content-length": "16"}),
    "completion-empty-prompt": ("POST", COMPLETIONS, b'{"prompt": ""}', {}),
    "completion-two-prompts": ("POST", COMPLETIONS, b'{"prompt": ["a", "b"]}', {}),
    "completion-suffix": ("POST", COMPLETIONS, b'{"prompt": "a", "suffix": "b"}', {}),
    "decode-negative-ids": ("POST", "/v1/internal/decode", b'{"tokens": [-1, -5]}', {}),
    "decode-huge-ids": ("POST", "/v1/internal/decode", b'{"tokens": [99999999999]}', {}),
    "load-traversal": ("POST", "/v1/internal/model/load", b'{"model_name": "../../etc"}', {}),
    "load-bad-args": ("POST", "/v1/internal/model/load", b'{"model_name": "x", "args": [1]}', {}),
    "load-unknown-option": ("POST", "/v1/internal/model/load", b'{"model_name": "MODEL", "args": {"warp": 9}}', {}),
    "load-bad-dtype": ("POST", "/v1/internal/model/load", b'{"model_name": "MODEL", "args": {"dtype": "junk"}}', {}),
    "load-both-bits": ("POST", "/v1/internal/model/load",
                       b'{"model_name": "MODEL", "args": {"load_in_4bit": true, "load_in_8bit": true}}', {}),
    "load-bool-as-text": ("POST", "/v1/internal/model/load",
                          b'{"model_name": "MODEL", "args": {"load_in_4bit": "junk"}}', {}),
    "load-quant-type": ("POST", "/v1/internal/model/load", b'{"model_name": "MODEL", "args": {"quant_type": 7}}', {}),
    "load-fast-decode": ("POST", "/v1/internal/model/load",
                         b'{"model_name": "MODEL", "args": {"fast_decode": "junk"}}', {}),
}

# Fields fuzzed per route, and the smallest valid body the bad value is put into.
ROUTES: dict[str, tuple[type, dict]] = {
    CHAT: (ChatCompletionBody, {"messages": HI, "max_tokens": 1}),
    COMPLETIONS: (CompletionBody, {"prompt": "Hi", "max_tokens": 1}),
    "/v1/internal/chat-prompt": (ChatCompletionBody, {"messages": HI}),
    "/v1/internal/token-count": (TextBody, {"text": "Hi"}),
    "/v1/internal/encode": (TextBody, {"text": "Hi"}),
    "/v1/internal/decode": (TokensBody, {"tokens": [1, 2]}),
    "/v1/internal/model/load": (LoadBody, {"model_name": "MODEL"}),
}
SKIP_FIELDS = {"stream_options"}  # nested object: its own field is fuzzed through the raw bodies


@dataclass
class Case:
    kind: str
    method: str
    path: str
    body: bytes | None
    headers: dict = field(default_factory=dict)
    field_name: str | None = None  # the field that holds the bad value: the error must name it


QUICK_VALUES = ("null", "text", "huge-int", "tiny-float", "unicode-digits", "control-chars")


def field_cases(routes: list[str], model_name: str, stream: bool = False, quick: bool = False) -> list[Case]:
    """Every (route, field, bad value) of ``routes``, each in an otherwise valid body."""
    values = {k: v for k, v in BAD_VALUES.items() if k in QUICK_VALUES} if quick else BAD_VALUES
    cases = []
    for path in routes:
        schema, base = ROUTES[path]
        base = {k: (model_name if v == "MODEL" else v) for k, v in base.items()}
        for name in schema.model_fields:
            if name in SKIP_FIELDS:
                continue
            for value_kind, value in values.items():
                body = {**base, name: value}
                if stream and "stream" in schema.model_fields and name != "stream":
                    body["stream"] = True
                suffix = "+stream" if stream else ""
                cases.append(Case(f"{path}:{name}:{value_kind}{suffix}", "POST", path,
                                  json.dumps(body).encode(), field_name=name))
    return cases


def shape_cases(model_name: str, every_route: bool = False) -> list[Case]:
    routes = list(ROUTES) if every_route else [CHAT]
    cases = [Case(f"{path}:{kind}", "POST", path, body) for path in routes
             for kind, body in RAW_BODIES.items() if kind != "empty-prompt-completion"]
    for kind, (method, path, body, headers) in OTHER_REQUESTS.items():
        body = body.replace(b"MODEL", model_name.encode()) if body else body
        cases.append(Case(kind, method, path, body, headers))
    return cases


@dataclass
class Verdict:
    status: int
    problem: str | None  # None: a good answer (accepted, or refused clearly)
    server_error: bool = False


def judge(case: Case, response: httpx.Response) -> Verdict:
    """Is this answer acceptable? 5xx and error events in a stream are ours; a 4xx must explain itself."""
    status = response.status_code
    if status >= 500 and status != 503:
        return Verdict(status, f"HTTP {status}: {response.text[:200]}", server_error=True)
    if status < 400:
        if "server_error" in response.text and "text/event-stream" in response.headers.get("content-type", ""):
            return Verdict(status, f"error inside a 200 stream: {response.text[-300:]}", server_error=True)
        return Verdict(status, None)
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return Verdict(status, f"HTTP {status} without an OpenAI-shaped error body: {response.text[:200]}")
    if len(message) < 15 or not message.rstrip().endswith((".", ")")):
        return Verdict(status, f"HTTP {status} with an unclear message: {message!r}")
    named = case.field_name
    words = message.lower().replace("_", " ")
    param = (error.get("param") or "").split(".")[0]
    if status == 400 and named and named.replace("_", " ") not in words and param != named:
        return Verdict(status, f"HTTP 400 that does not name {named!r}: {message[:200]}")
    return Verdict(status, None)


def send(client: httpx.Client, case: Case) -> Verdict:
    try:
        response = client.request(case.method, case.path, content=case.body, headers=case.headers)
    except httpx.HTTPError as err:
        return Verdict(0, f"no answer ({type(err).__name__}: {err})", server_error=True)
    return judge(case, response)
