"""The llama.cpp loader: the same greedy, stop, cancel and sampler tests as the Transformers loader.

Runs on two real GGUF files: the default model's own (SmolLM2-135M-Instruct,
Q4_1) and a tiny LLaMA written in a fixture with the ``gguf`` package. The
reference is plain ``llama_cpp.Llama`` greedy decoding of the same prompt ids.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

llama_cpp = pytest.importorskip("llama_cpp")

from modules.core.config import LoaderOptions  # noqa: E402
from modules.core.engine import Engine, GenerationRequest  # noqa: E402
from modules.core.errors import ModelLoadError  # noqa: E402
from modules.core.loaders import LOADERS, choose_loader  # noqa: E402
from modules.core.models import ModelManager  # noqa: E402
from modules.core.registry import ModelRegistry, describe_gguf  # noqa: E402
from modules.core.sampling import SamplerParams  # noqa: E402
from tiny_gguf import build_tiny_gguf  # noqa: E402

GREEDY = SamplerParams(do_sample=False, max_new_tokens=40)
GGUF_NAME = "SmolLM2-135M-Instruct-Q4_1.gguf"
CHAT_PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    models = tmp_path_factory.mktemp("gguf-models")
    build_tiny_gguf(models / "tiny-llama.gguf", context=1024)
    return models


@pytest.fixture(scope="module")
def default_models(default_model_dir) -> Path:
    models = default_model_dir.parent
    assert (models / GGUF_NAME).is_file(), "ensure_default_model should have copied the GGUF"
    return models


def load_manager(models: Path, name: str, **options) -> ModelManager:
    manager = ModelManager(ModelRegistry(models), Engine(), LoaderOptions(**options))
    loaded = manager.load(name)
    assert loaded.loader == "llama.cpp"
    return manager


@pytest.fixture(scope="module")
def tiny(tiny_models):
    manager = load_manager(tiny_models, "tiny-llama.gguf")
    yield manager
    manager.unload()


@pytest.fixture(scope="module")
def smol(default_models):
    manager = load_manager(default_models, GGUF_NAME, n_ctx=2048)
    yield manager
    manager.unload()


def run(engine: Engine, request: GenerationRequest) -> tuple[str, list[int], object]:
    deltas = list(engine.generate(request))
    text = "".join(d.text for d in deltas)
    ids = [i for d in deltas for i in d.token_ids]
    return text, ids, deltas[-1]


def plain_llama_greedy(path: Path, prompt_ids: list[int], n: int, n_ctx: int) -> list[int]:
    """Reference: llama_cpp.Llama's own generate, greedy, no repeat penalty, cut at EOS."""
    llama = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)
    try:
        eos = {llama.token_eos(), llama_cpp.llama_vocab_eot(llama_cpp.llama_model_get_vocab(llama.model))}
        out: list[int] = []
        for token in llama.generate(prompt_ids, temp=0.0, top_k=1, repeat_penalty=1.0):
            if token in eos or len(out) >= n:
                break
            out.append(token)
        return out
    finally:
        llama.close()


# -- the default model's GGUF -------------------------------------------------------------
def test_default_gguf_is_described_and_picked_by_file_type(default_models):
    info = describe_gguf(default_models / GGUF_NAME)
    assert info.problem == "" and info.kind == "gguf"
    assert info.architecture == "llama" and info.context_length == 8192
    assert 100_000_000 < info.parameters < 200_000_000
    assert info.quantization == "Q4_1" and "<|im_start|>" in (info.chat_template or "")
    assert choose_loader(info, LoaderOptions()).name == "llama.cpp"
    assert choose_loader(info, LoaderOptions(loader="transformers")).name == "transformers"


def test_default_gguf_greedy_matches_plain_llama_cpp(smol, default_models):
    backend = smol.engine.backend
    prompt_ids = backend.encode(CHAT_PROMPT)
    text, ids, last = run(smol.engine, GenerationRequest(prompt=CHAT_PROMPT, params=GREEDY))
    assert ids == plain_llama_greedy(default_models / GGUF_NAME, prompt_ids, 40, 2048)
    assert "Paris" in text
    assert last.finish_reason == "stop" and last.completion_tokens == len(ids)
    assert last.prompt_tokens == len(prompt_ids)


def test_default_gguf_tokenizes_like_the_transformers_tokenizer(smol, default_model_dir):
    """Template text with special tokens becomes the same ids in both loaders, so prompts are interchangeable."""
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(default_model_dir)
    backend = smol.engine.backend
    ids = backend.encode(CHAT_PROMPT)
    assert ids == reference(CHAT_PROMPT, add_special_tokens=False)["input_ids"]
    assert ids[0] == 1 and ids.count(2) == 1  # <|im_start|>, <|im_end|> as single ids
    assert backend.eos_token_ids >= {2}
    assert backend.decode(ids) == reference.decode(ids, skip_special_tokens=True)
    assert (backend.special_tokens.bos, backend.special_tokens.eos) == (reference.bos_token, reference.eos_token)


def test_next_turn_evaluates_only_the_new_tokens(smol, monkeypatch):
    """A chat's next turn repeats the conversation: the cached prefix is kept, only the rest is evaluated."""
    backend = smol.engine.backend
    first_turn = run(smol.engine, GenerationRequest(prompt=CHAT_PROMPT, params=GREEDY.replace(max_new_tokens=8)))[0]
    next_turn = (CHAT_PROMPT + first_turn + "<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n"
                 "<|im_start|>assistant\n")
    batches: list[int] = []
    real_eval = backend.llama.eval
    monkeypatch.setattr(backend.llama, "eval", lambda tokens: (batches.append(len(tokens)), real_eval(tokens))[1])
    ids = backend.encode(next_turn)
    again = run(smol.engine, GenerationRequest(prompt=next_turn,
                                               params=GREEDY.replace(max_new_tokens=4, ban_eos_token=True)))[1]
    assert len(again) == 4
    new_tokens = len(ids) - len(backend.encode(CHAT_PROMPT))
    assert 0 < batches[0] <= new_tokens + 1  # the prompt's new part, not all of its len(ids) tokens
    assert batches[1:] == [1] * (len(batches) - 1)  # then one token at a time
    # Repeating a request gives the same greedy reply.
    assert run(smol.engine, GenerationRequest(prompt=next_turn, params=GREEDY))[1] == \
        run(smol.engine, GenerationRequest(prompt=next_turn, params=GREEDY))[1]


# -- the tiny GGUF --------------------------------------------------------------------------
def test_tiny_gguf_loads_and_tokenizes(tiny):
    backend = tiny.engine.backend
    assert backend.info.loader == "llama.cpp" and backend.info.context_length == 1024
    ids = backend.encode("<s>the quick brown fox</s>")
    assert ids[0] == 1 and ids.count(1) == 1  # BOS written by a template is not doubled
    assert ids[-1] == 2  # </s> as text becomes the EOS id
    assert backend.decode(ids) == " the quick brown fox"  # SentencePiece's leading space; specials skipped
    assert len(ids) == 6  # whole words: the vocabulary has them


def test_tiny_gguf_greedy_matches_plain_llama_cpp(tiny, tiny_models):
    prompt = "the quick brown fox"
    _, ids, last = run(tiny.engine, GenerationRequest(prompt=prompt, params=GREEDY))
    expected = plain_llama_greedy(tiny_models / "tiny-llama.gguf", tiny.engine.backend.encode(prompt), 40, 1024)
    assert ids == expected and len(ids) > 0
    assert last.finish_reason == ("length" if len(ids) == 40 else "stop")


def test_max_new_tokens_and_counts(tiny):
    params = GREEDY.replace(max_new_tokens=5, ban_eos_token=True)
    _, ids, last = run(tiny.engine, GenerationRequest(prompt="one two", params=params))
    assert len(ids) == 5 and last.finish_reason == "length" and last.completion_tokens == 5
    assert last.prompt_tokens == len(tiny.engine.backend.encode("one two"))


@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_stop_string_split_across_tokens_is_never_shown(which, request):
    manager = request.getfixturevalue(which)
    prompt = "the lazy dog" if which == "tiny" else CHAT_PROMPT.replace("the capital of France", "a llama")
    params = GREEDY.replace(max_new_tokens=30, ban_eos_token=True)
    full, ids, _ = run(manager.engine, GenerationRequest(prompt=prompt, params=params))
    pieces = [manager.engine.backend.decode([i]) for i in ids]
    # a stop string that starts inside one token and ends inside a later one
    start = len(pieces[0]) + len(pieces[1]) - 1
    stop = full[start:start + 4]
    assert len(stop) == 4 and not any(stop in p for p in pieces)
    deltas = list(manager.engine.generate(GenerationRequest(prompt=prompt, params=params, stop_strings=[stop])))
    shown = [d.text for d in deltas]
    assert "".join(shown) == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop" and deltas[-1].stopped_by == stop
    running = ""
    for piece in shown:
        running += piece
        assert stop not in running


@pytest.mark.parametrize("which", ["tiny", "smol"])
def test_cancel_mid_stream_stops_within_one_token(which, request):
    manager = request.getfixturevalue(which)
    req = GenerationRequest(prompt="the llamas", params=GREEDY.replace(max_new_tokens=200, ban_eos_token=True))
    seen = 0
    for delta in manager.engine.generate(req):
        if delta.token_ids:
            seen += 1
            if seen == 3:
                req.cancel.set()
        last = delta
    assert last.finish_reason == "cancelled" and last.completion_tokens == 3


def test_stop_all_from_another_thread(tiny):
    """Stop from another thread (the UI's Stop, the API's stop endpoint) after the first token."""
    req = GenerationRequest(prompt="hello", params=GREEDY.replace(max_new_tokens=100_000, ban_eos_token=True))
    stopper = None
    for delta in tiny.engine.generate(req):
        if delta.token_ids and stopper is None:
            stopper = threading.Thread(target=tiny.engine.stop_all)
            stopper.start()
            stopper.join()
        last = delta
    assert last.finish_reason == "cancelled"
    assert last.completion_tokens <= 2


def test_seed_makes_sampling_reproducible(tiny):
    params = SamplerParams(temperature=1.5, max_new_tokens=25, seed=1234, ban_eos_token=True)
    first = run(tiny.engine, GenerationRequest(prompt="hello", params=params))[1]
    second = run(tiny.engine, GenerationRequest(prompt="hello", params=params))[1]
    other = run(tiny.engine, GenerationRequest(prompt="hello", params=params.replace(seed=99)))[1]
    assert first == second and first != other


def test_logit_bias_and_ban_eos_change_the_choice(tiny):
    base = run(tiny.engine, GenerationRequest(prompt="hello", params=GREEDY.replace(max_new_tokens=1)))[1]
    push = 300 if base[0] != 300 else 301
    biased = GREEDY.replace(max_new_tokens=3, logit_bias={push: 100.0})
    assert run(tiny.engine, GenerationRequest(prompt="hello", params=biased))[1] == [push] * 3
    to_eos = GREEDY.replace(max_new_tokens=3, logit_bias={2: 100.0})
    _, ids, last = run(tiny.engine, GenerationRequest(prompt="hello", params=to_eos))
    assert ids == [] and last.finish_reason == "stop"
    banned = to_eos.replace(ban_eos_token=True)
    assert 2 not in run(tiny.engine, GenerationRequest(prompt="hello", params=banned))[1]


def test_repetition_penalty_changes_greedy_output(tiny):
    params = GREEDY.replace(max_new_tokens=30, ban_eos_token=True)
    plain = run(tiny.engine, GenerationRequest(prompt="the dog", params=params))[1]
    penalised = run(tiny.engine, GenerationRequest(prompt="the dog", params=params.replace(repetition_penalty=5.0)))[1]
    assert plain != penalised
    assert len(set(penalised)) >= len(set(plain))


@pytest.mark.parametrize("name,value", [("min_p", 0.1), ("top_k", 5), ("top_p", 0.5), ("typical_p", 0.8),
                                        ("mirostat_mode", 2), ("mirostat_mode", 1), ("xtc_probability", 0.5),
                                        ("repetition_penalty", 1.3), ("presence_penalty", 0.5),
                                        ("frequency_penalty", 0.5), ("dry_multiplier", 0.8)])
def test_every_supported_sampler_runs_without_warnings(tiny, name, value):
    params = SamplerParams(max_new_tokens=8, seed=7, ban_eos_token=True).replace(**{name: value})
    deltas = list(tiny.engine.generate(GenerationRequest(prompt="hello", params=params)))
    assert deltas[0].warnings == []
    assert deltas[-1].completion_tokens == 8


@pytest.mark.parametrize("name,value", [("tfs", 0.9), ("top_a", 0.2), ("no_repeat_ngram_size", 2),
                                        ("penalty_alpha", 0.3)])
def test_unsupported_sampler_is_reported_not_ignored(tiny, name, value):
    params = SamplerParams(max_new_tokens=4, seed=1).replace(**{name: value})
    deltas = list(tiny.engine.generate(GenerationRequest(prompt="hello", params=params)))
    assert any(name in w and "llama.cpp" in w for w in deltas[0].warnings)
    assert deltas[-1].finish_reason in {"stop", "length"}


def test_extension_logits_processor_is_applied(tiny):
    """A transformers-style processor (as extensions pass) edits the logits llama.cpp samples from."""
    import torch

    def only_token_300(input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        assert input_ids.shape[0] == 1 and scores.shape == (1, tiny.engine.backend.llama.n_vocab())
        out = torch.full_like(scores, -1e9)
        out[0, 300] = 0.0
        return out

    request = GenerationRequest(prompt="hello", params=GREEDY.replace(max_new_tokens=4),
                                logits_processors=[only_token_300])
    assert run(tiny.engine, request)[1] == [300] * 4


def test_logprobs_are_reported(tiny):
    deltas = list(tiny.engine.generate(GenerationRequest(prompt="hello", params=GREEDY.replace(max_new_tokens=3))))
    logprobs = [p for d in deltas for p in d.logprobs]
    assert len(logprobs) == 3 and all(-50 < p <= 0 for p in logprobs)


def test_folder_is_refused_and_missing_library_is_explained(tiny_models, monkeypatch):
    loader = LOADERS["llama.cpp"]
    folder = ModelRegistry(tiny_models).get("tiny-llama.gguf")
    folder.kind = "folder"
    with pytest.raises(ModelLoadError, match="reads .gguf files"):
        loader.load(folder, LoaderOptions(), lambda f, m: None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    ok, why = loader.available()
    assert not ok and "pip install llama-cpp-python" in why
    info = ModelRegistry(tiny_models).get("tiny-llama.gguf")
    assert choose_loader(info, LoaderOptions()).name == "transformers"  # GGUF falls back when llama.cpp is missing
    with pytest.raises(ModelLoadError, match="not available"):
        choose_loader(info, LoaderOptions(loader="llama.cpp"))


def test_loader_options_reach_llama_cpp(tiny_models):
    manager = load_manager(tiny_models, "tiny-llama.gguf", n_ctx=256, n_threads=1, n_batch=16, use_mmap=False)
    try:
        backend = manager.engine.backend
        assert backend.info.context_length == backend.llama.n_ctx() == 256
        assert backend.info.details["threads"] == 1 and backend.info.details["mmap"] is False
        long_prompt = "one two three " * 100  # > 256 tokens: truncated from the left, still answers
        deltas = list(manager.engine.generate(GenerationRequest(prompt=long_prompt,
                                                                params=GREEDY.replace(max_new_tokens=8, ban_eos_token=True))))
        assert deltas[0].truncated_prompt_tokens > 0 and deltas[-1].completion_tokens == 8
    finally:
        manager.unload()
    assert manager.engine.backend is None
