"""Transformers loader: 16-bit, 8-bit and 4-bit (bitsandbytes) models, folders and GGUF files."""
from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any, Iterator

import torch

from modules.core.config import LoaderOptions
from modules.core.errors import ModelLoadError
from modules.core.loaders.base import BackendInfo, Piece, ProgressCallback
from modules.core.loaders.decoding import cache_argument_name, decode_tokens
from modules.core.loaders.fast_decode import FastDecoder, build_fast_decoder, check_option
from modules.core.loaders.memory import LoadWatcher, process_rss, release_memory, cuda_allocated
from modules.core.loaders.tokens import eos_ids, hf_prompt_encoder
from modules.core.logits import TRANSFORMERS_FEATURES, build_processors
from modules.core.prompt_tokens import Segment
from modules.core.registry import ModelInfo
from modules.core.sampling import SamplerParams

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_device(options: LoaderOptions) -> str:
    if options.cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bf16 where the hardware has it (CUDA Ampere+, and CPUs, where it measured faster), else fp16."""
    if name != "auto":
        if name not in DTYPES:
            raise ModelLoadError(f"Unknown dtype {name!r}: choose auto, bfloat16, float16 or float32.")
        return DTYPES[name]
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.bfloat16


def quantization_config(options: LoaderOptions, device: str) -> Any:
    """The BitsAndBytesConfig for 8/4-bit, or None for 16/32-bit."""
    if not (options.load_in_4bit or options.load_in_8bit):
        return None
    if options.load_in_4bit and options.load_in_8bit:
        raise ModelLoadError("Choose either 4-bit or 8-bit loading, not both.")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError as err:
        raise ModelLoadError(f"4/8-bit loading needs bitsandbytes, which is not installed here ({err}). "
                             "Install it with: pip install bitsandbytes") from None
    if options.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_enable_fp32_cpu_offload=bool(options.cpu_memory))
    if options.quant_type not in {"nf4", "fp4"}:
        raise ModelLoadError(f"Unknown 4-bit quant type {options.quant_type!r}: choose nf4 or fp4.")
    compute = pick_dtype(options.compute_dtype, device)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=options.quant_type,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=options.use_double_quant,
                              llm_int8_enable_fp32_cpu_offload=bool(options.cpu_memory))


def device_map_and_memory(options: LoaderOptions, device: str) -> tuple[Any, dict | None]:
    """``device_map`` and ``max_memory``: caps per GPU and for CPU offload."""
    if device != "cuda":
        return {"": device}, None
    if not options.gpu_memory and not options.cpu_memory:
        return "auto", None
    max_memory: dict[Any, str] = {}
    for index in range(torch.cuda.device_count()):
        if index < len(options.gpu_memory):
            max_memory[index] = _with_unit(options.gpu_memory[index])
    if options.cpu_memory:
        max_memory["cpu"] = _with_unit(options.cpu_memory)
    return "auto", max_memory


def _with_unit(value: str) -> str:
    value = str(value).strip()
    return f"{value}GiB" if value.replace(".", "", 1).isdigit() else value


class TransformersBackend:
    """A loaded PyTorch model and its tokenizer; generation through :func:`decode_tokens`."""

    supported_samplers = TRANSFORMERS_FEATURES
    streams_text = False

    def __init__(self, model: Any, tokenizer: Any, info: BackendInfo, fast: FastDecoder | None = None,
                 folder: Path | None = None) -> None:
        self.model, self.info, self.tokenizer = model, info, tokenizer
        self.fast = fast  # the static-cache, compiled path (fast_decode.py), when in use
        self.skip_special_tokens = True  # False (models/config.yaml): replies show special tokens such as <|prompter|>
        self.encoder = hf_prompt_encoder(tokenizer, folder)
        self.special_tokens = self.encoder.tokens
        self.bos_prefix = self.encoder.bos_prefix
        self.eos_token_ids = eos_ids(tokenizer, model)
        self._cache_arg = cache_argument_name(model)
        self._device = next(model.parameters()).device

    def encode(self, text: str) -> list[int]:
        return self.encoder.encode(text)

    def encode_segments(self, segments: list[Segment]) -> list[int]:
        return self.encoder.encode_segments(segments)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def stream(self, prompt: str, input_ids: list[int] | None, params: SamplerParams,
               cancel: threading.Event, logits_processors: list = ()) -> Iterator[Piece]:
        ids = input_ids if input_ids is not None else self.encode(prompt)
        generator = None
        if params.seed >= 0:
            generator = torch.Generator(device="cpu").manual_seed(params.seed)
        processors = build_processors(params, self.eos_token_ids, generator)
        processors.extend(logits_processors)
        steps = self.fast.steps(len(ids), params.max_new_tokens) if self.fast and self.fast.usable else None
        tokens = decode_tokens(self.model, ids, processors, params.greedy, generator, self._device,
                               self._cache_arg, steps=steps)
        if steps is not None:  # the static cache holds max_new_tokens, no more
            tokens = itertools.islice(tokens, params.max_new_tokens)
        for token, logprob in tokens:
            yield Piece(token_id=token, logprob=logprob)
            if cancel.is_set():
                return

    def unload(self) -> None:
        if self.fast is not None:
            self.fast.close()
            self.fast = None
        self.model = None
        self.tokenizer = None
        release_memory()


class TransformersLoader:
    name = "transformers"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def load(self, model: ModelInfo, options: LoaderOptions, progress: ProgressCallback) -> TransformersBackend:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_option(options.fast_decode)
        device = pick_device(options)
        dtype = pick_dtype(options.dtype, device)
        quant = quantization_config(options, device)
        device_map, max_memory = device_map_and_memory(options, device)
        folder, extra = _source(model)
        progress(0.02, "Reading the tokenizer")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=options.trust_remote_code, **extra)
            progress(0.1, "Loading weights")
            bits = 4 if options.load_in_4bit else 8 if options.load_in_8bit else 16
            with LoadWatcher(_expected_bytes(model, bits, dtype), progress):
                hf_model = AutoModelForCausalLM.from_pretrained(
                    folder, dtype=dtype, quantization_config=quant, device_map=device_map,
                    max_memory=max_memory, trust_remote_code=options.trust_remote_code,
                    low_cpu_mem_usage=True, **extra)
        except torch.cuda.OutOfMemoryError:
            release_memory()
            raise ModelLoadError(f"{model.name}: out of GPU memory while loading. Try 4-bit loading, "
                                 "a lower --gpu-memory cap with CPU offload, or a smaller model.") from None
        except ModelLoadError:
            raise
        except Exception as err:  # noqa: BLE001 - every loading failure becomes a readable message
            release_memory()
            raise ModelLoadError(_explain_load_failure(model, err, options)) from err
        hf_model.eval()
        progress(0.97, "Preparing generation")
        info = BackendInfo(name=model.name, loader=self.name, context_length=model.context_length or 2048,
                           dtype=str(dtype).removeprefix("torch."), quantization=_quant_label(options),
                           device=device, memory_bytes=_model_bytes(hf_model), vocab_size=len(tokenizer))
        fast = _fast_decoder(hf_model, options, info, progress)
        folder_path = model.path if model.kind == "folder" else None  # a GGUF carries no tokenizer.model
        backend = TransformersBackend(hf_model, tokenizer, info, fast, folder_path)
        backend.skip_special_tokens = bool(model.settings.get("skip_special_tokens", True))
        return backend


def _fast_decoder(model: Any, options: LoaderOptions, info: BackendInfo,
                  progress: ProgressCallback) -> FastDecoder | None:
    """The fast path when ``options.fast_decode`` asks for it and it compiles; the reason goes in ``info``."""
    fast, note = build_fast_decoder(model, cache_argument_name(model), options.fast_decode, info.context_length,
                                    announce=lambda message: progress(0.97, message))
    info.details["fast_decode"] = note
    return fast


def _source(model: ModelInfo) -> tuple[str, dict]:
    if model.problem:
        raise ModelLoadError(model.problem)
    if model.kind == "gguf":
        return str(model.path.parent), {"gguf_file": model.path.name}
    return str(model.path), {}


def _expected_bytes(model: ModelInfo, bits: int, dtype: torch.dtype) -> int:
    per_param = {4: 0.55, 8: 1.0}.get(bits, torch.finfo(dtype).bits / 8)
    return int(model.parameters * per_param)


def _quant_label(options: LoaderOptions) -> str:
    if options.load_in_4bit:
        return f"4-bit {options.quant_type}" + (" double-quant" if options.use_double_quant else "")
    return "8-bit" if options.load_in_8bit else ""


def _model_bytes(model: Any) -> int:
    try:
        return int(model.get_memory_footprint())
    except Exception:  # noqa: BLE001
        return 0


def _explain_load_failure(model: ModelInfo, err: Exception, options: LoaderOptions) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "trust_remote_code" in str(err):
        return (f"{model.name} needs code shipped with the model to load. Remote code is off for safety; "
                "turn on 'trust remote code' only if you trust where the model came from.")
    if isinstance(err, (OSError, ValueError)) and "safetensors" in str(err).lower():
        return f"{model.name}: the weight files are damaged or incomplete ({text}). Download the model again."
    return f"{model.name} could not be loaded with the Transformers loader: {text}"


__all__ = ["TransformersLoader", "TransformersBackend", "process_rss", "cuda_allocated"]
