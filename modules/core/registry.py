"""What is in models/: folders and GGUF files, described without loading weights."""
from __future__ import annotations

import dataclasses
import json
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.core.errors import CorralError, ModelLoadError
from modules.core.model_rules import config_for_model
from modules.core.templates import FALLBACK_FORMAT

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
GGUF_MAGIC = b"GGUF"


@dataclass
class ModelInfo:
    """One entry of models/: enough to list it, estimate it and pick a loader."""

    name: str
    path: Path
    kind: str  # "folder" | "gguf"
    architecture: str = ""
    parameters: int = 0
    context_length: int = 0
    size_bytes: int = 0
    quantization: str = ""
    chat_template: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # from models/config.yaml
    problem: str = ""  # non-empty: listed, but cannot be loaded (why)

    @property
    def instruction_format(self) -> str:
        """The format this model will use unless the user picks one (see templates.resolve_format)."""
        if self.chat_template:
            return "model's own"
        return self.settings.get("instruction_format", FALLBACK_FORMAT)


def _dir_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{path} is not valid JSON ({err}). Re-download the model or fix the file.") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object.")
    return data


def safetensors_parameter_count(path: Path) -> int:
    """Exact element count from a safetensors header (8-byte length + JSON), no weights read."""
    with path.open("rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    total = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        count = 1
        for dim in meta["shape"]:
            count *= dim
        total += count
    return total


def estimate_parameters(config: dict) -> int:
    """LLaMA-shaped parameter count from config.json, for .bin folders without headers."""
    hidden = config.get("hidden_size", 0)
    layers = config.get("num_hidden_layers", 0)
    inter = config.get("intermediate_size", 0)
    vocab = config.get("vocab_size", 0)
    heads = config.get("num_attention_heads", 1) or 1
    kv_heads = config.get("num_key_value_heads", heads) or heads
    head_dim = config.get("head_dim") or hidden // heads
    attn = hidden * head_dim * heads * 2 + hidden * head_dim * kv_heads * 2
    mlp = 3 * hidden * inter
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (attn + mlp + 2 * hidden) + embeddings + hidden


def _chat_template_of_folder(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(template, str):
                return template
            if isinstance(template, list):  # named templates: take "default"
                for item in template:
                    if isinstance(item, dict) and item.get("name") == "default":
                        return item.get("template")
    return None


def describe_folder(folder: Path) -> ModelInfo:
    """Describe a Hugging Face folder; problems are recorded, not raised."""
    info = ModelInfo(name=folder.name, path=folder, kind="folder", size_bytes=_dir_size(folder))
    try:
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise ModelLoadError(f"{folder.name}: no config.json in {folder}. Download the whole model folder.")
        config = _read_json(config_path)
        info.architecture = ",".join(config.get("architectures") or [config.get("model_type", "unknown")])
        text_config = config.get("text_config", config)
        info.context_length = int(text_config.get("max_position_embeddings") or 2048)
        quant = config.get("quantization_config") or {}
        info.quantization = quant.get("quant_method", "") if isinstance(quant, dict) else ""
        weights = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
        if not weights:
            raise ModelLoadError(f"{folder.name}: no weights (*.safetensors or *.bin) in {folder}. The download is incomplete.")
        shards = [p for p in weights if p.suffix == ".safetensors"]
        info.parameters = (sum(safetensors_parameter_count(p) for p in shards) if shards
                           else estimate_parameters(text_config))
        if not any((folder / n).is_file() for n in TOKENIZER_FILES):
            raise ModelLoadError(f"{folder.name}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {folder}.")
        info.chat_template = _chat_template_of_folder(folder)
    except ModelLoadError as err:
        info.problem = str(err)
    except (OSError, ValueError, KeyError, struct.error) as err:
        info.problem = f"{folder.name}: could not read the model files ({err})."
    return info


def describe_gguf(path: Path) -> ModelInfo:
    """Describe a .gguf file from its header; a file that is not GGUF is marked, not raised."""
    info = ModelInfo(name=path.name, path=path, kind="gguf", size_bytes=path.stat().st_size)
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        info.problem = f"{path.name} is not a GGUF file (it does not start with 'GGUF'). Re-download it."
        return info
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        arch = _gguf_field(reader, "general.architecture") or "unknown"
        info.architecture = arch
        info.context_length = int(_gguf_field(reader, f"{arch}.context_length") or 2048)
        info.parameters = sum(int(t.n_elements) for t in reader.tensors)
        file_type = _gguf_field(reader, "general.file_type")
        info.quantization = _gguf_file_type_name(file_type)
        info.chat_template = _gguf_field(reader, "tokenizer.chat_template")
    except Exception as err:  # noqa: BLE001 - a damaged file must not break the listing
        info.problem = f"{path.name}: the GGUF header could not be read ({err})."
    return info


def _gguf_field(reader: Any, key: str) -> Any:
    field_ = reader.fields.get(key)
    if field_ is None:
        return None
    value = field_.parts[field_.data[0]]
    if field_.types and field_.types[0].name == "STRING":
        return bytes(value).decode("utf-8", errors="replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def _gguf_file_type_name(file_type: Any) -> str:
    try:
        from gguf import LlamaFileType

        return LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
    except Exception:  # noqa: BLE001
        return "gguf"


def _signature(entry: Path) -> tuple:
    """What changes when a model's files change: size and time of the entry and of a folder's files."""
    try:
        stat = entry.stat()
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in entry.iterdir()) \
            if entry.is_dir() else []
    except OSError:
        return ()  # unreadable now: describe again, which records the problem
    return (stat.st_size, stat.st_mtime_ns, tuple(files))


class ModelRegistry:
    """Lists models/ on demand (the folder changes under us: downloads, user copies)."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        # Other catalogs listed after models/: objects with list() and a ``problem`` text
        # (a remote server's models, see loaders/remote_loader.RemoteCatalog).
        self.sources: list[Any] = []
        # path -> (signature, description): a GGUF header or a folder's safetensors headers are
        # read again only when the files change (listing models is on every API model lookup).
        self._described: dict[Path, tuple[tuple, ModelInfo]] = {}
        self._cache_lock = threading.Lock()

    def _describe(self, entry: Path, describe: Any) -> ModelInfo:
        """``describe(entry)``, from the cache while the entry's files keep their sizes and times."""
        signature = _signature(entry)
        with self._cache_lock:
            cached = self._described.get(entry)
        if cached is None or cached[0] != signature:
            cached = (signature, describe(entry))
            with self._cache_lock:
                self._described[entry] = cached
        return dataclasses.replace(cached[1], settings={})

    def list(self) -> list[ModelInfo]:
        out = self._local()
        for source in self.sources:
            out.extend(source.list())
        return out

    def _local(self) -> list[ModelInfo]:
        if not self.models_dir.is_dir():
            return []
        config_path = self.models_dir / "config.yaml"
        out = []
        for entry in sorted(self.models_dir.iterdir(), key=lambda p: p.name.lower()):
            if entry.name.startswith(".") or entry.name.endswith(".partial"):
                continue
            if entry.is_dir():
                info = self._describe(entry, describe_folder)
            elif entry.suffix.lower() == ".gguf":
                info = self._describe(entry, describe_gguf)
            else:
                continue
            try:
                info.settings = config_for_model(config_path, info.name)
            except CorralError as err:
                info.problem = info.problem or str(err)
            out.append(info)
        return out

    def names(self) -> list[str]:
        return [m.name for m in self.list()]

    def get(self, name: str) -> ModelInfo:
        """The model called ``name``; a clear error lists what there is."""
        for info in self.list():
            if info.name == name:
                return info
        known = ", ".join(self.names()) or "none"
        problems = "".join(f" {s.problem}" for s in self.sources if getattr(s, "problem", ""))
        raise ModelLoadError(f"No model called {name!r} in {self.models_dir}. Models there: {known}.{problems}")


@dataclass
class MemoryEstimate:
    """What a model needs in memory, in bytes, split so the UI can say where it goes."""

    weights: int
    kv_cache: int  # keys and values for ``context_tokens`` tokens, 16-bit
    overhead: int  # runtime (CUDA context, activations), a flat allowance
    context_tokens: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.overhead


RUNTIME_OVERHEAD = 300 * 1024**2


def estimate_memory(info: ModelInfo, bits: int, context_tokens: int = 2048,
                    double_quant: bool = False) -> MemoryEstimate:
    """Memory a model needs at 16, 8 or 4 bits: weights, KV cache for ``context_tokens``, overhead.

    bitsandbytes quantizes Linear layers only: the token embeddings and the output head stay in
    16 bits at 8 and 4 bits. 4-bit stores 0.5 byte per weight plus one fp32 scale per 64-weight
    block (NF4/FP4), or with double quantization an 8-bit scale plus an fp32 one per 256 blocks.
    A LLaMA-7B comes out at 13.5 GB (16-bit), 7.0 GB (8-bit) and 4.2 GB (4-bit) of weights.
    """
    config = _config_of(info)
    params = info.parameters
    embeddings = min(_embedding_parameters(config), params) if bits < 16 else 0
    linear = params - embeddings
    if bits >= 16:
        per_weight = 2.0
    elif bits == 8:
        per_weight = 1.0
    else:
        per_weight = 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)
    weights = int(linear * per_weight) + embeddings * 2
    return MemoryEstimate(weights, _kv_cache_bytes(config, context_tokens), RUNTIME_OVERHEAD, context_tokens)


def estimate_memory_bytes(info: ModelInfo, bits: int, context_tokens: int = 2048) -> int:
    """Rough total memory at 16, 8 or 4 bits (see :func:`estimate_memory`)."""
    return estimate_memory(info, bits, context_tokens).total


def _config_of(info: ModelInfo) -> dict:
    config_path = info.path / "config.json"
    if info.kind != "folder" or not config_path.is_file():
        return {}
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return config.get("text_config", config) if isinstance(config, dict) else {}


def _embedding_parameters(config: dict) -> int:
    """Input embeddings plus the output head (once when tied): the weights bitsandbytes leaves alone."""
    hidden, vocab = config.get("hidden_size", 0), config.get("vocab_size", 0)
    return vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)


def _kv_cache_bytes(config: dict, tokens: int) -> int:
    heads = config.get("num_attention_heads", 1) or 1
    head_dim = config.get("head_dim") or config.get("hidden_size", 0) // heads
    kv_heads = config.get("num_key_value_heads", heads) or heads
    return 2 * config.get("num_hidden_layers", 0) * kv_heads * head_dim * tokens * 2
