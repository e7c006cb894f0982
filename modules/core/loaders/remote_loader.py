"""Remote loader: an OpenAI-compatible server as the model behind the whole UI.

vLLM or TGI serving a big model across many GPUs, llama.cpp's server, Ollama, or another
Corral. The engine drives this backend like any other: it streams text, Stop cancels it.

Why ``/v1/completions`` with a prompt built here rather than ``/v1/chat/completions``: the
Backend protocol takes a prompt, and building it locally keeps every chat mode, characters,
continue / impersonate and "show the exact prompt" identical to a local model. The format
follows the usual resolution order; another Corral (and llama.cpp's server) tell us their
model's own chat template, so the prompt is the one that server would build itself. For
other servers the name is matched in models/config.yaml, else a plain transcript -- choose the model's
format in the UI (or map its name in models/config.yaml) when that is wrong.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx

from modules.core.config import LoaderOptions
from modules.core.errors import CorralError, ModelLoadError, RemoteServerError
from modules.core.loaders.base import BackendInfo, Piece, ProgressCallback
from modules.core.loaders.remote_http import CALL_TIMEOUT, LIST_TIMEOUT, RemoteServer
from modules.core.prompt_tokens import Segment, SpecialTokens, joined
from modules.core.registry import ModelInfo
from modules.core.sampling import SAMPLER_FEATURES, SamplerParams
from modules.core.templates import config_for_model

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096  # when a server does not say (OpenAI's own /v1/models does not)
CHARS_PER_TOKEN = 4  # the estimate used where the server's tokenizer cannot be asked

# Sampler fields every OpenAI-compatible server accepts (our name -> theirs).
OPENAI_FIELDS = {"temperature": "temperature", "top_p": "top_p", "presence_penalty": "presence_penalty",
                 "frequency_penalty": "frequency_penalty", "seed": "seed", "logit_bias": "logit_bias"}
# Extra fields a kind of server is known to accept (sent only when not neutral).
EXTRA_FIELDS: dict[str, dict[str, str]] = {
    "vllm": {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty"},
    "llama.cpp": {"top_k": "top_k", "min_p": "min_p", "typical_p": "typical_p",
                  "repetition_penalty": "repeat_penalty", "repetition_penalty_range": "repeat_last_n",
                  "mirostat_mode": "mirostat", "mirostat_tau": "mirostat_tau", "mirostat_eta": "mirostat_eta",
                  "xtc_probability": "xtc_probability", "xtc_threshold": "xtc_threshold",
                  "dry_multiplier": "dry_multiplier"},
    # Another Corral takes every sampler of ours under its own name.
    "corral": {name: name for name in SamplerParams.field_names()
               if name not in {"stop", "max_new_tokens", *OPENAI_FIELDS}},
}


def field_map(kind: str) -> dict[str, str]:
    return {**OPENAI_FIELDS, **EXTRA_FIELDS.get(kind, {})}


def supported_features(kind: str) -> set[str]:
    """The sampler features (sampling.SAMPLER_FEATURES) this kind of server applies."""
    return {SAMPLER_FEATURES[name] for name in field_map(kind) if name in SAMPLER_FEATURES}


def sampler_fields(params: SamplerParams, kind: str) -> dict[str, Any]:
    """The request fields for ``params``: non-neutral values the server takes, greedy as temperature 0."""
    neutral = SamplerParams()
    out: dict[str, Any] = {}
    for ours, theirs in field_map(kind).items():
        value = getattr(params, ours)
        if value != getattr(neutral, ours):
            out[theirs] = value
    if params.greedy:
        out["temperature"] = 0.0
    if "logit_bias" in out:
        out["logit_bias"] = {str(token): bias for token, bias in params.logit_bias.items()}
    if kind == "llama.cpp" and "repeat_penalty" in out and params.repetition_penalty_range == 0:
        out["repeat_last_n"] = -1  # ours: 0 = the whole context; llama.cpp: -1
    return out


@dataclass
class ServerModel:
    name: str
    context_length: int
    chat_template: str | None = None
    eos_token: str = ""
    instruction_format: str | None = None


def _server_kind(entries: list[dict]) -> str:
    owners = {str(e.get("owned_by", "")).lower() for e in entries}
    if "vllm" in owners:
        return "vllm"
    if owners & {"llamacpp", "llama.cpp"}:
        return "llama.cpp"
    return "openai"


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


def describe_server(server: RemoteServer) -> tuple[str, list[ServerModel]]:
    """(kind, models): kind is "corral", "vllm", "llama.cpp" or "openai" (anything else)."""
    listing = server.get("/v1/models")
    data = listing.get("data") if isinstance(listing, dict) else None
    entries = [e for e in data or [] if isinstance(e, dict) and e.get("id")]
    info = server.try_get("/v1/internal/model/info")
    if isinstance(info, dict) and info.get("server") == "corral":
        if not info.get("model_name"):
            return "corral", []
        return "corral", [ServerModel(name=str(info["model_name"]), context_length=_int(info.get("context_length"))
                                      or DEFAULT_CONTEXT, chat_template=info.get("chat_template") or None,
                                      eos_token=str(info.get("eos_token") or ""),
                                      instruction_format=info.get("instruction_format"))]
    kind = _server_kind(entries)
    props = server.try_get("/props") if kind == "llama.cpp" else None
    props = props if isinstance(props, dict) else {}
    props_ctx = _int((props.get("default_generation_settings") or {}).get("n_ctx"))
    models = []
    for entry in entries:
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        context = (_int(entry.get("max_model_len")) or _int(entry.get("context_length")) or props_ctx
                   or _int(meta.get("n_ctx_train")) or DEFAULT_CONTEXT)
        models.append(ServerModel(name=str(entry["id"]), context_length=context,
                                  chat_template=props.get("chat_template") or None,
                                  eos_token=str(props.get("eos_token") or "")))
    return kind, models


def _find(server: RemoteServer, models: list[ServerModel], name: str) -> ServerModel:
    for model in models:
        if model.name == name:
            return model
    known = ", ".join(m.name for m in models) or "none (is a model loaded there?)"
    raise ModelLoadError(f"The remote server at {server.url} has no model called {name!r}. Its models: {known}.")


class RemoteBackend:
    """A model on a remote server; text streams from its ``/v1/completions``."""

    streams_text = True

    def __init__(self, server: RemoteServer, kind: str, model: ServerModel) -> None:
        self.server, self.kind = server, kind
        self.eos_token_ids: set[int] = set()
        self.supported_samplers = supported_features(kind)
        # No BOS in the prompt text: the server adds its own when it tokenizes (vLLM would double it).
        self.special_tokens = SpecialTokens(bos="", eos=model.eos_token)
        self.bos_prefix: list[int] = []  # the server adds its own BOS
        counts = "exact (the server's tokenizer)" if kind == "corral" else "estimated (characters / 4)"
        self.info = BackendInfo(name=model.name, loader="remote", context_length=model.context_length,
                                device=server.url, details={"server": kind, "url": server.url, "token_counts": counts})
        self._count_cache: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        self._need_corral("token ids")
        return list(self.server.post("/v1/internal/encode", {"text": text})["tokens"])

    def encode_segments(self, segments: list[Segment]) -> list[int]:
        """The server tokenizes text as one piece: it cannot be told which parts a person wrote."""
        return self.encode(joined(segments))

    def decode(self, ids: list[int]) -> str:
        self._need_corral("decoding token ids")
        return str(self.server.post("/v1/internal/decode", {"tokens": list(ids)})["text"])

    def count_tokens(self, text: str) -> int:
        """Exact from another Corral; elsewhere an estimate (characters / 4), as info.details says."""
        if self.kind != "corral":
            return max(1, -(-len(text) // CHARS_PER_TOKEN))
        with self._lock:
            if self._count_cache and self._count_cache[0] == text:
                return self._count_cache[1]
        length = int(self.server.post("/v1/internal/token-count", {"text": text})["length"])
        with self._lock:
            self._count_cache = (text, length)
        return length

    def stream(self, prompt: str, input_ids: list[int] | None, params: SamplerParams,
               cancel: threading.Event, logits_processors: list = ()) -> Iterator[Piece]:
        if logits_processors:
            log.warning("The remote loader cannot run extension logits processors; they are skipped.")
        payload = {"model": self.info.name, "prompt": prompt, "stream": True,
                   "max_tokens": self._max_tokens(prompt, params), **sampler_fields(params, self.kind)}
        if params.stop:
            payload["stop"] = list(params.stop)
        for event in self.server.events("/v1/completions", payload, cancel):
            text = _choice_text(event)
            if text:
                yield Piece(text=text)
            if cancel.is_set():
                return

    def _max_tokens(self, prompt: str, params: SamplerParams) -> int:
        """max_new_tokens, clamped so prompt + reply fit (servers such as vLLM refuse more)."""
        context = params.truncation_length or self.info.context_length
        return max(min(params.max_new_tokens, context - self.count_tokens(prompt)), 1)

    def _need_corral(self, what: str) -> None:
        if self.kind != "corral":
            raise RemoteServerError(f"The remote server at {self.server.url} does not share its tokenizer, "
                                    f"so {what} are not available with the remote loader.")

    def unload(self) -> None:
        self.server.close()


def _choice_text(event: dict) -> str:
    choices = event.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    if isinstance(choice.get("text"), str):
        return choice["text"]
    delta = choice.get("delta")
    return (delta.get("content") or "") if isinstance(delta, dict) else ""


class RemoteLoader:
    name = "remote"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def load(self, model: ModelInfo, options: LoaderOptions, progress: ProgressCallback) -> RemoteBackend:
        url = options.remote_url or model.settings.get("remote_url")
        if not url:
            raise ModelLoadError("The remote loader needs a server: start with --remote-url http://HOST:PORT "
                                 "(an OpenAI-compatible server such as vLLM, llama.cpp's server or another Corral).")
        server = RemoteServer(url, options.remote_key)
        try:
            progress(0.2, f"Asking {server.url} about {model.name}")
            kind, models = describe_server(server)
            found = _find(server, models, model.name)
        except CorralError as err:
            server.close()
            raise ModelLoadError(str(err)) from None
        backend = RemoteBackend(server, kind, found)
        if kind != "corral":
            log.info("Remote server %s (%s): token counts are estimated (characters / 4).", server.url, kind)
        return backend


def remote_model_info(server_url: str, model: ServerModel, kind: str, models_dir: Path) -> ModelInfo:
    """A dropdown entry for a remote model; its settings route it to the remote loader."""
    info = ModelInfo(name=model.name, path=Path("remote") / model.name, kind="remote",
                     architecture=f"remote ({kind})", context_length=model.context_length,
                     chat_template=model.chat_template)
    try:
        info.settings = config_for_model(models_dir / "config.yaml", model.name)
    except CorralError as err:
        info.problem = str(err)
    if model.instruction_format and not model.chat_template and model.instruction_format != "model's own":
        info.settings.setdefault("instruction_format", model.instruction_format)
    info.settings.update(loader="remote", remote_url=server_url)
    return info


class RemoteCatalog:
    """The models a remote server offers, as ModelInfo entries (cached briefly: the UI lists often)."""

    def __init__(self, url: str, key: str | None, models_dir: Path, ttl: float = 5.0, failed_ttl: float = 30.0) -> None:
        self.url, self.key, self.models_dir = url, key, Path(models_dir)
        self.ttl, self.failed_ttl = ttl, failed_ttl  # a server that did not answer is asked again less often
        self.problem = ""  # why the last listing failed, for error messages
        self._cached: tuple[float, list[ModelInfo]] | None = None
        self._lock = threading.Lock()

    def _fetch(self, timeout: httpx.Timeout = CALL_TIMEOUT) -> list[ModelInfo]:
        server = RemoteServer(self.url, self.key, timeout)
        try:
            kind, models = describe_server(server)
        finally:
            server.close()
        return [remote_model_info(server.url, m, kind, self.models_dir) for m in models]

    def list(self) -> list[ModelInfo]:
        """The server's models; an unreachable server lists nothing (``problem`` says why)."""
        with self._lock:
            ttl = self.failed_ttl if self.problem else self.ttl
            if self._cached and time.monotonic() - self._cached[0] < ttl:
                return list(self._cached[1])
            try:
                infos, self.problem = self._fetch(LIST_TIMEOUT), ""
            except CorralError as err:
                infos, self.problem = [], str(err)
                log.warning("%s", err)
            self._cached = (time.monotonic(), infos)
            return list(infos)

    def get(self, name: str) -> ModelInfo:
        """``name`` on the server, asked afresh; a clear error names what the server has."""
        try:
            infos = self._fetch()
        except CorralError as err:
            raise ModelLoadError(str(err)) from None
        for info in infos:
            if info.name == name:
                return info
        known = ", ".join(i.name for i in infos) or "none (is a model loaded there?)"
        raise ModelLoadError(f"The remote server at {self.url} has no model called {name!r}. Its models: {known}.")


def first_remote_model(options: LoaderOptions) -> str | None:
    """The first model the configured server lists (what ``--loader remote`` loads without --model)."""
    if not options.remote_url:
        return None
    server = RemoteServer(options.remote_url, options.remote_key)
    try:
        _, models = describe_server(server)
    finally:
        server.close()
    return models[0].name if models else None
