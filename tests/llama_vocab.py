"""llama.cpp's LLaMA SentencePiece vocabulary and tokenizer test vectors, cached offline for tests.

llama-cpp-python's source package (the version start_linux.sh builds) carries
``vendor/llama.cpp/models/ggml-vocab-llama-spm.gguf``: the original LLaMA
tokenizer's 32000 pieces, scores and types, with ``.inp``/``.out`` test vectors
beside it (inputs separated by a marker line; ids, space-separated, one line
per input; tokenized without BOS). ``ggml-vocab-gpt-neox.gguf`` (the
GPT-NeoX-20B/Pythia BPE vocabulary) comes from the same package.

Only those files are extracted, once, into a cache folder outside the
repository (``$CORRAL_TEST_CACHE`` or ``~/.cache/corral-test``). The source
package is looked for in ``$CORRAL_LLAMA_CPP_SDIST``, the cache folder and
start_linux.sh's wheel cache, and otherwise fetched from PyPI with pip.

``build_sp_model`` turns the GGUF vocabulary back into a SentencePiece
``tokenizer.model`` set up as the original LLaMA one was (BPE, byte fallback,
dummy prefix, identity normalization, no whitespace folding).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_VERSION = "0.3.36"  # keep equal to LLAMA_CPP_VERSION in start_linux.sh
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"
MODELS_DIR = f"llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp/models"
SPM_GGUF = "ggml-vocab-llama-spm.gguf"
NEOX_GGUF = "ggml-vocab-gpt-neox.gguf"
WANTED = (SPM_GGUF, SPM_GGUF + ".inp", SPM_GGUF + ".out", NEOX_GGUF)
SEPARATOR = "\n__ggml_vocab_test__\n"  # as llama.cpp's tests/test-tokenizer-0.cpp splits inputs


class VocabUnavailable(RuntimeError):
    """The vocabulary files are not cached and the source package could not be found or fetched."""


@dataclass(frozen=True)
class VocabFiles:
    """Paths of the extracted files and the parsed test vectors (text → ids, without BOS)."""

    folder: Path
    gguf: Path
    neox_gguf: Path
    vectors: tuple[tuple[str, tuple[int, ...]], ...]


def cache_root() -> Path:
    """Where test downloads live: ``$CORRAL_TEST_CACHE`` or ``~/.cache/corral-test``."""
    configured = os.environ.get("CORRAL_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "corral-test"


def ensure_llama_vocab(cache: Path | None = None) -> VocabFiles:
    """Return the cached vocabulary files, extracting them from the source package the first time."""
    folder = (cache or cache_root()) / f"llama-vocab-{LLAMA_CPP_VERSION}"
    if not all((folder / name).is_file() for name in WANTED):
        _extract(_find_or_fetch_sdist(folder.parent), folder)
    inp = (folder / (SPM_GGUF + ".inp")).read_text(encoding="utf-8")
    out = (folder / (SPM_GGUF + ".out")).read_text(encoding="utf-8")
    return VocabFiles(folder, folder / SPM_GGUF, folder / NEOX_GGUF, parse_test_vectors(inp, out))


def parse_test_vectors(inp: str, out: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Pair each input of a ``.inp`` file with its ``.out`` line of ids, as test-tokenizer-0 does."""
    texts = inp.split(SEPARATOR)
    if inp.endswith(SEPARATOR):  # the file ends with a marker: nothing follows it
        texts[-1:] = [] if texts[-1] == "" else texts[-1:]
    lines = out.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(texts) != len(lines):
        raise ValueError(f"{len(texts)} test inputs but {len(lines)} output lines: the files do not match")
    return tuple((text, tuple(int(tok) for tok in line.split())) for text, line in zip(texts, lines))


def _sdist_candidates(cache: Path) -> list[Path]:
    configured = os.environ.get("CORRAL_LLAMA_CPP_SDIST")
    wheels = Path(os.environ.get("CORRAL_WHEEL_CACHE", Path.home() / ".cache" / "corral-wheels"))
    places = [Path(configured)] if configured else []
    return places + [cache / SDIST_NAME, wheels / SDIST_NAME]


def _find_or_fetch_sdist(cache: Path) -> Path:
    for candidate in _sdist_candidates(cache):
        if candidate.is_file():
            return candidate
    cache.mkdir(parents=True, exist_ok=True)
    download = Path(tempfile.mkdtemp(prefix="sdist-", dir=cache))
    command = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={LLAMA_CPP_VERSION}", "--no-deps",
               "--no-binary", ":all:", "--disable-pip-version-check", "-q",
               "-d", str(download)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VocabUnavailable(f"pip download of llama-cpp-python {LLAMA_CPP_VERSION} failed: {exc}") from exc
    sdist = download / SDIST_NAME
    if not sdist.is_file():
        raise VocabUnavailable(
            f"could not fetch {SDIST_NAME} from PyPI (pip said: {done.stderr.strip()[-400:]}). "
            f"Put the file in {cache} or point CORRAL_LLAMA_CPP_SDIST at it.")
    return sdist


def _extract(sdist: Path, folder: Path) -> None:
    """Copy only the wanted members out of the source package (written to a temp name, then renamed)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist, "r:gz") as archive:
        for name in WANTED:
            member = archive.extractfile(f"{MODELS_DIR}/{name}")
            if member is None:
                raise VocabUnavailable(f"{sdist} has no {MODELS_DIR}/{name}")
            partial = folder / f"{name}.{os.getpid()}.part"  # several test runs may extract at once
            partial.write_bytes(member.read())
            partial.replace(folder / name)
    if sdist.parent.name.startswith("sdist-"):  # our own download: only the extracted files are kept
        sdist.unlink()
        sdist.parent.rmdir()


@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer fields of a llama.cpp vocabulary file."""

    tokens: list[str]
    scores: list[float]
    types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    unk_id: int
    add_bos: bool
    add_eos: bool


def read_gguf_vocab(path: Path) -> GgufVocab:
    """Read ``tokenizer.ggml.*`` from a GGUF file with the ``gguf`` package."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def value(key: str, default=None):
        field = fields.get(f"tokenizer.ggml.{key}")
        return default if field is None else field.contents()

    tokens = value("tokens")
    return GgufVocab(tokens=tokens, scores=value("scores", [0.0] * len(tokens)), types=value("token_type"),
                     merges=value("merges", []), bos_id=value("bos_token_id"), eos_id=value("eos_token_id"),
                     unk_id=value("unknown_token_id", 0), add_bos=bool(value("add_bos_token", True)),
                     add_eos=bool(value("add_eos_token", False)))


def build_sp_model(gguf_path: Path, out_path: Path) -> Path:
    """Write a SentencePiece ``tokenizer.model`` equal in behaviour to the original LLaMA one."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    vocab = read_gguf_vocab(gguf_path)
    model = pb.ModelProto()
    for piece, score, kind in zip(vocab.tokens, vocab.scores, vocab.types):
        model.pieces.add(piece=piece, score=score, type=kind)  # gguf token types use SentencePiece's numbers
    trainer = model.trainer_spec
    trainer.model_type = pb.TrainerSpec.BPE
    trainer.vocab_size = len(vocab.tokens)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.max_sentencepiece_length = 16
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = vocab.unk_id, vocab.bos_id, vocab.eos_id, -1
    trainer.unk_piece, trainer.bos_piece, trainer.eos_piece = (vocab.tokens[vocab.unk_id], vocab.tokens[vocab.bos_id],
                                                               vocab.tokens[vocab.eos_id])
    normalizer = model.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(model.SerializeToString())
    return out_path


def count_matches(encode, vectors) -> tuple[int, list[str]]:
    """How many test vectors ``encode(text) -> ids`` reproduces, and the inputs it gets wrong."""
    wrong = [text for text, ids in vectors if tuple(encode(text)) != ids]
    return len(vectors) - len(wrong), wrong
