"""llama.cpp loader: GGUF files through ``llama-cpp-python``, on CPUs, CUDA and Metal.

The backend streams token ids exactly like the Transformers backend, so the
engine applies stop strings, EOS, max_new_tokens and cancel the same way and
the UI and API cannot tell the two apart except by speed.

It drives llama.cpp's low-level API (evaluate a batch, sample one token with a
sampler chain) rather than ``create_completion``: that keeps tokenization,
stop strings and cancel in our hands, and lets the sampler chain be built
from our :class:`SamplerParams` one feature at a time. Parameters llama.cpp
cannot apply (tail-free, top-a, no-repeat-ngram, contrastive search) are left
out of ``supported_samplers``, so the engine reports them instead of
dropping them silently.
"""
from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import threading
from typing import Any, Iterator

from modules.core.config import LoaderOptions
from modules.core.errors import ModelLoadError
from modules.core.loaders.base import BackendInfo, Piece, ProgressCallback
from modules.core.loaders.memory import release_memory
from modules.core.prompt_tokens import PromptEncoder, Segment, SpecialTokens, control_texts
from modules.core.registry import ModelInfo
from modules.core.sampling import SamplerParams

INSTALL_HINT = ("Install it with the start script (--with-llama-cpp, or CORRAL_LLAMA_CPP=1), or by hand: "
                "installer_files/env/bin/pip install llama-cpp-python (compiles llama.cpp, ~4 minutes).")

LLAMACPP_FEATURES = {
    "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty", "repetition_penalty_range",
    "presence_penalty", "frequency_penalty", "mirostat", "xtc", "dry", "ban_eos_token", "seed", "logit_bias",
}

# llama.cpp keeps the whole context's KV cache in memory from the start, so a
# model that claims 128k tokens would reserve gigabytes before the first
# word. n_ctx 0 means "the model's own length, up to this"; ask for more with
# --n-ctx.
DEFAULT_CONTEXT_CAP = 8192
# DRY's other settings (SamplerParams carries only the multiplier): the
# values its author recommends, which llama.cpp's own server uses as defaults.
DRY_BASE, DRY_ALLOWED_LENGTH = 1.75, 2
DRY_BREAKERS = ["\n", ":", "\"", "*"]
RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed


def default_threads() -> int:
    """Physical cores: llama.cpp slows down on hyper-threads; llama-cpp-python's own default is half the cores."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:
        cores = None
    return max(cores or os.cpu_count() or 1, 1)


class LlamaCppBackend:
    """A loaded ``llama_cpp.Llama``; token-id streaming with our own sampler chain."""

    supported_samplers = LLAMACPP_FEATURES
    streams_text = False

    def __init__(self, llama: Any, info: BackendInfo) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llama, self.info = llama, info
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = llama.n_vocab()
        self._pieces: dict[int, bytes] = {}
        self.skip_special_tokens = True  # False (models/config.yaml): replies show special tokens such as <|prompter|>
        self.encoder = self._prompt_encoder()
        self.special_tokens = self.encoder.tokens
        self.bos_prefix = self.encoder.bos_prefix
        self.eos_token_ids = self._eos_ids()

    # -- tokens --------------------------------------------------------------------
    def _adds_bos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_bos(self._vocab)) and self.llama.token_bos() >= 0

    def _eos_ids(self) -> set[int]:
        """EOS and EOT (ChatML models end turns with EOT), whichever the file names."""
        ids = {self.llama.token_eos(), self._lib.llama_vocab_eot(self._vocab)}
        return {int(i) for i in ids if i is not None and i >= 0}

    def _prompt_encoder(self) -> PromptEncoder:
        bos, eos = self.llama.token_bos(), self.llama.token_eos()
        tokens = SpecialTokens(bos=self._text_of(bos), eos=self._text_of(eos))
        control = control_texts((tokens.bos, bos), (tokens.eos, eos), self._control_texts())
        return PromptEncoder(self._encode_plain, control, [bos] if self._adds_bos() else [], tokens)

    def _control_texts(self) -> dict[str, int]:
        """Text -> id of every control and user-defined token in the GGUF's vocabulary."""
        wanted = self._lib.LLAMA_TOKEN_ATTR_CONTROL | self._lib.LLAMA_TOKEN_ATTR_USER_DEFINED
        out: dict[str, int] = {}
        for token in range(self._n_vocab):
            if self._lib.llama_vocab_get_attr(self._vocab, token) & wanted:
                text = self._text_of(token)
                if text:
                    out.setdefault(text, token)
        return out

    def _text_of(self, token: int | None) -> str:
        if token is None or token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _encode_plain(self, text: str) -> list[int]:
        """Text as text: control texts typed in it stay characters (``special=False``)."""
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _piece(self, token: int, special: bool = False) -> bytes:
        """Bytes of one token (control tokens are empty unless ``special``); cached."""
        if not special and token in self._pieces:
            return self._pieces[token]
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = self._lib.llama_token_to_piece(self._vocab, token, buffer, size, 0, special)
            if n >= 0:
                break
            size = -n  # too small: llama.cpp says how much it needs
        piece = buffer.raw[:n]
        if not special:
            self._pieces[token] = piece
        return piece

    def encode(self, text: str) -> list[int]:
        return self.encoder.encode(text)

    def encode_segments(self, segments: list[Segment]) -> list[int]:
        return self.encoder.encode_segments(segments)

    def decode(self, ids: list[int]) -> str:
        special = not self.skip_special_tokens
        return b"".join(self._piece(int(i), special) for i in ids).decode("utf-8", errors="replace")

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    # -- generation ------------------------------------------------------------------
    def stream(self, prompt: str, input_ids: list[int] | None, params: SamplerParams,
               cancel: threading.Event, logits_processors: list = ()) -> Iterator[Piece]:
        ids = list(input_ids if input_ids is not None else self.encode(prompt))
        if not ids:
            ids = self.bos_prefix or [self.llama.token_eos()]
        chain = build_sampler_chain(self._lib, self.llama, self._vocab, params, self.eos_token_ids)
        try:
            if uses_history(params):  # penalties and DRY see the prompt too, as in the Transformers loader
                for token in ids:
                    self._lib.llama_sampler_accept(chain, token)
            self.prefill(ids)
            while True:
                if logits_processors:
                    self._apply_processors(logits_processors)
                token, logprob = self.sample_one_token(chain)
                yield Piece(token_id=token, logprob=logprob)
                if cancel.is_set():
                    return
                self.decode_one_token(token)
        finally:
            self._lib.llama_sampler_free(chain)

    def prefill(self, ids: list[int]) -> None:
        """Evaluate the prompt, reusing the KV cache of the longest prefix already evaluated.

        A chat's next turn repeats the whole conversation, so only its new
        tokens are computed. At least the last prompt token is evaluated again
        so that its logits are fresh.
        """
        llama = self.llama
        cached = llama.input_ids[: llama.n_tokens].tolist() if llama.n_tokens else []
        keep = 0
        for a, b in zip(cached, ids[:-1]):
            if a != b:
                break
            keep += 1
        llama.n_tokens = keep  # eval() drops the KV cache from n_tokens on
        llama.eval(ids[keep:])

    def decode_one_token(self, token: int) -> None:
        """One step: the chosen token into the KV cache, fresh logits out."""
        self.llama.eval([token])

    def sample_one_token(self, chain: Any) -> tuple[int, float]:
        """Run the sampler chain on the last logits; also the chosen token's log-probability (raw logits)."""
        token = int(self._lib.llama_sampler_sample(chain, self.llama.ctx, -1))
        logits = self._last_logits()
        peak = float(logits.max())
        logprob = float(logits[token]) - peak - math.log(float(_np().exp(logits - peak).sum()))
        return token, logprob

    def _last_logits(self) -> Any:
        """The logits of the last evaluated position, as a writable numpy view of llama.cpp's buffer [V]."""
        pointer = self._lib.llama_get_logits_ith(self.llama.ctx, -1)
        return _np().ctypeslib.as_array(pointer, shape=(self._n_vocab,))

    def _apply_processors(self, processors: list) -> None:
        """Extensions' transformers-style processors edit the logits in place before llama.cpp samples."""
        import torch

        logits = self._last_logits()
        history = torch.tensor([self.llama.input_ids[: self.llama.n_tokens].tolist()], dtype=torch.long)
        scores = torch.from_numpy(logits.copy()).unsqueeze(0)  # [1, V]
        for processor in processors:
            scores = processor(history, scores)
        logits[:] = scores[0].to(torch.float32).numpy()

    def unload(self) -> None:
        if self.llama is not None:
            self.llama.close()
        self.llama = None
        release_memory()


def _np() -> Any:
    import numpy

    return numpy


def uses_history(params: SamplerParams) -> bool:
    """True when a sampler in the chain looks at earlier tokens (penalties, DRY)."""
    penalties = (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) != (1.0, 0.0, 0.0)
    return penalties or params.dry_multiplier > 0


def build_sampler_chain(lib: Any, llama: Any, vocab: Any, params: SamplerParams, eos_ids: set[int]) -> Any:
    """A llama.cpp sampler chain applying ``params`` (penalties, biases, then truncation, then the draw).

    The order follows the Transformers loader: penalties and biases change the
    logits first, then top-k / typical / top-p / min-p / XTC narrow the
    candidates, then temperature, then the draw (or argmax when greedy).
    """
    chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        lib.llama_sampler_chain_add(chain, sampler)

    n_vocab = llama.n_vocab()
    seed = params.seed if params.seed >= 0 else RANDOM_SEED
    window = params.repetition_penalty_range or llama.n_ctx()
    if (params.repetition_penalty, params.presence_penalty, params.frequency_penalty) != (1.0, 0.0, 0.0):
        add(lib.llama_sampler_init_penalties(n_vocab, window, params.repetition_penalty,
                                             params.frequency_penalty, params.presence_penalty))
    if params.dry_multiplier > 0:
        add(_dry_sampler(lib, vocab, params.dry_multiplier, llama.n_ctx()))
    bias = dict(params.logit_bias)
    if params.ban_eos_token:
        bias.update({token: -math.inf for token in eos_ids})
    if bias:
        add(_logit_bias_sampler(lib, n_vocab, bias))
    if params.greedy:
        add(lib.llama_sampler_init_greedy())
        return chain
    if params.mirostat_mode in (1, 2):
        add(lib.llama_sampler_init_temp(params.temperature))
        add(lib.llama_sampler_init_mirostat(n_vocab, seed, params.mirostat_tau, params.mirostat_eta, 100)
            if params.mirostat_mode == 1 else
            lib.llama_sampler_init_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta))
        return chain
    _add_truncation(lib, add, params, seed)
    add(lib.llama_sampler_init_temp(params.temperature))
    add(lib.llama_sampler_init_dist(seed))
    return chain


def _add_truncation(lib: Any, add: Any, params: SamplerParams, seed: int) -> None:
    """top-k, typical, top-p, min-p and XTC, each only when it is not neutral."""
    if params.top_k > 0:
        add(lib.llama_sampler_init_top_k(params.top_k))
    if params.typical_p < 1.0:
        add(lib.llama_sampler_init_typical(params.typical_p, 1))
    if params.top_p < 1.0:
        add(lib.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0.0:
        add(lib.llama_sampler_init_min_p(params.min_p, 1))
    if params.xtc_probability > 0.0:
        add(lib.llama_sampler_init_xtc(params.xtc_probability, params.xtc_threshold, 1, seed))


def _logit_bias_sampler(lib: Any, n_vocab: int, bias: dict[int, float]) -> Any:
    entries = (lib.llama_logit_bias * len(bias))()
    for slot, (token, value) in zip(entries, bias.items()):
        slot.token, slot.bias = int(token), float(value)
    return lib.llama_sampler_init_logit_bias(n_vocab, len(bias), entries)


def _dry_sampler(lib: Any, vocab: Any, multiplier: float, n_ctx: int) -> Any:
    breakers = (ctypes.c_char_p * len(DRY_BREAKERS))(*[b.encode("utf-8") for b in DRY_BREAKERS])
    return lib.llama_sampler_init_dry(vocab, multiplier, DRY_BASE, DRY_ALLOWED_LENGTH, n_ctx,
                                      breakers, len(DRY_BREAKERS))


class LlamaCppLoader:
    """Loads ``.gguf`` files with llama.cpp; the context, threads and GPU layers come from LoaderOptions."""

    name = "llama.cpp"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("llama_cpp") is None:
            return False, f"llama-cpp-python is not installed. {INSTALL_HINT}"
        return True, ""

    def load(self, model: ModelInfo, options: LoaderOptions, progress: ProgressCallback) -> LlamaCppBackend:
        if model.problem:
            raise ModelLoadError(model.problem)
        if model.kind != "gguf":
            raise ModelLoadError(f"{model.name} is a folder of weights; the llama.cpp loader reads .gguf files. "
                                 "Choose the Transformers loader, or convert the model to GGUF.")
        ok, why = self.available()
        if not ok:
            raise ModelLoadError(why)
        import llama_cpp

        progress(0.05, "Reading the GGUF file with llama.cpp")
        kwargs = llama_arguments(model, options)
        try:
            llama = llama_cpp.Llama(model_path=str(model.path), **kwargs)
        except Exception as err:  # noqa: BLE001 - every loading failure becomes a readable message
            release_memory()
            raise ModelLoadError(f"{model.name} could not be loaded with llama.cpp ({err}). The file may be "
                                 "incomplete or made for a newer llama.cpp: re-download it, or update with "
                                 "the start script's --update.") from err
        progress(0.97, "Preparing generation")
        gpu = bool(llama_cpp.llama_supports_gpu_offload()) and options.n_gpu_layers != 0 and not options.cpu
        info = BackendInfo(name=model.name, loader=self.name, context_length=llama.n_ctx(),
                           dtype="", quantization=model.quantization, device="gpu" if gpu else "cpu",
                           memory_bytes=model.size_bytes, vocab_size=llama.n_vocab(),
                           details={"threads": kwargs["n_threads"], "n_gpu_layers": kwargs["n_gpu_layers"],
                                    "n_batch": kwargs["n_batch"], "mmap": kwargs["use_mmap"],
                                    "mlock": kwargs["use_mlock"]})
        backend = LlamaCppBackend(llama, info)
        backend.skip_special_tokens = bool(model.settings.get("skip_special_tokens", True))
        return backend


def llama_arguments(model: ModelInfo, options: LoaderOptions) -> dict[str, Any]:
    """``llama_cpp.Llama`` keyword arguments from our options (0 / -1 meaning 'choose for me')."""
    n_ctx = options.n_ctx or min(model.context_length or 2048, DEFAULT_CONTEXT_CAP)
    threads = options.n_threads or default_threads()
    return {
        "n_ctx": n_ctx,
        "n_threads": threads,
        "n_threads_batch": threads,
        "n_gpu_layers": 0 if options.cpu else options.n_gpu_layers,
        "n_batch": max(options.n_batch, 1),
        "n_ubatch": max(options.n_batch, 1),
        "use_mmap": options.use_mmap,
        "use_mlock": options.use_mlock,
        "verbose": False,
    }


__all__ = ["LlamaCppLoader", "LlamaCppBackend", "LLAMACPP_FEATURES", "build_sampler_chain", "llama_arguments"]
