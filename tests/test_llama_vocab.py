"""The real LLaMA vocabulary from llama.cpp, the SentencePiece model rebuilt from it, and the family models.

The rebuilt ``tokenizer.model`` must reproduce every one of llama.cpp's LLaMA
tokenizer test vectors with the ``sentencepiece`` package, as the original
2023 model does. transformers' tokenizers differ only on text that starts with
whitespace (SentencePiece adds its dummy prefix ``▁`` even there); that is why
prompts are encoded on the SentencePiece path.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from family_models import FAMILIES, OASST_TOKENS
from llama_vocab import count_matches, parse_test_vectors

BOS, EOS = 1, 2


def test_vocabulary_and_test_vectors_are_extracted(llama_spm_vocab):
    assert llama_spm_vocab.gguf.stat().st_size > 500_000
    assert len(llama_spm_vocab.vectors) == 46
    texts = dict(llama_spm_vocab.vectors)
    assert texts["Hello world"] == (15043, 3186)  # ▁Hello ▁world
    assert texts[" Hello world"] == (29871, 15043, 3186)  # the dummy prefix makes a lone ▁ first
    assert texts[""] == ()


def test_test_vector_files_are_parsed_as_llama_cpp_reads_them():
    inp = "a\n__ggml_vocab_test__\n\n__ggml_vocab_test__\n\n\n__ggml_vocab_test__\n"
    assert parse_test_vectors(inp, " 1 2\n\n 13\n") == (("a", (1, 2)), ("", ()), ("\n", (13,)))
    with pytest.raises(ValueError, match="2 test inputs but 1 output lines"):
        parse_test_vectors("a\n__ggml_vocab_test__\nb", "1\n")


def test_rebuilt_sentencepiece_model_reproduces_every_llama_cpp_vector(llama_spm_vocab, llama_sp_model_file):
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(llama_sp_model_file))
    assert processor.vocab_size() == 32000
    assert (processor.bos_id(), processor.eos_id(), processor.unk_id()) == (BOS, EOS, 0)
    matched, wrong = count_matches(processor.encode, llama_spm_vocab.vectors)
    assert wrong == [] and matched == 46


def test_transformers_llama_tokenizer_differs_only_on_leading_whitespace(llama_spm_vocab, family_model_dirs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(family_model_dirs["llama-1"]))
    matched, wrong = count_matches(lambda text: tokenizer.encode(text, add_special_tokens=False),
                                   llama_spm_vocab.vectors)
    # Measured with transformers 5.24: 31 of 46; all 15 others start with whitespace.
    assert matched >= 31
    assert all(text[:1].isspace() for text in wrong), wrong


@pytest.mark.parametrize("kind", ["llama-1", "llama-2-chat", "llama-2-chat-template", "oasst-llama"])
def test_llama_family_model_loads_with_its_special_ids(family_model_dirs, kind):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = family_model_dirs[kind]
    assert folder.name == FAMILIES[kind].folder and (folder / "tokenizer.model").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (BOS, EOS)
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<s>", "</s>")
    assert model.config.vocab_size % 32 == 0 and model.config.vocab_size >= len(tokenizer)
    assert tokenizer.encode("Hello world") == [BOS, 15043, 3186]  # BOS added once, as add_bos_token says
    assert ("chat_template" in json.loads((folder / "tokenizer_config.json").read_text())) == (
        kind == "llama-2-chat-template")


def test_legacy_tokenizer_starts_a_new_piece_after_a_special_token(family_model_dirs, llama_sp_model_file):
    import sentencepiece as spm
    from transformers import AutoTokenizer

    processor = spm.SentencePieceProcessor(model_file=str(llama_sp_model_file))
    tokenizer = AutoTokenizer.from_pretrained(str(family_model_dirs["llama-1"]))
    # "legacy": true in tokenizer_config.json: each run of text is encoded as SentencePiece encodes it
    # alone, so the text after </s> gets the word-start marker (▁US, ER, : — not a ▁USER piece).
    written = tokenizer.encode("A1</s>USER:", add_special_tokens=False)
    assert written == processor.encode("A1") + [EOS] + processor.encode("USER:")
    assert tokenizer.convert_ids_to_tokens(written[-3:]) == ["\u2581US", "ER", ":"]
    # Split, a typed </s> is plain text, exactly as SentencePiece encodes the whole string.
    typed = tokenizer.encode("A1</s>USER:", add_special_tokens=False, split_special_tokens=True)
    assert typed == processor.encode("A1</s>USER:") and EOS not in typed


def test_oasst_llama_turn_markers_are_added_special_tokens(family_model_dirs):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(family_model_dirs["oasst-llama"]))
    ids = {text: tokenizer.convert_tokens_to_ids(text) for text in OASST_TOKENS}
    assert sorted(ids.values()) == list(range(32000, 32000 + len(OASST_TOKENS)))
    assert tokenizer.encode("<|prompter|>", add_special_tokens=False) == [ids["<|prompter|>"]]
    assert tokenizer.decode([ids["<|assistant|>"]]) == "<|assistant|>"
    # Typed by a user, the marker and </s> are text when special tokens are split.
    typed = tokenizer.encode("<|prompter|></s>", add_special_tokens=False, split_special_tokens=True)
    assert not set(typed) & {*ids.values(), BOS, EOS}


def test_oasst_pythia_model_has_neox_vocabulary_and_endoftext_eos(family_model_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = family_model_dirs["oasst-pythia"]
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|endoftext|>", 0)
    assert tokenizer.encode("Hello world") == [12092, 1533]  # GPT-NeoX-20B's ids; no BOS
    prompter = tokenizer.convert_tokens_to_ids("<|prompter|>")
    assert prompter >= 50277 and tokenizer.encode("<|prompter|>Hi") == [prompter, 12764]
    assert model.config.vocab_size % 32 == 0 and model.config.vocab_size >= len(tokenizer)


def test_family_models_are_built_deterministically(family_model_dirs, llama_spm_vocab, tmp_path):
    from family_models import build_family_model

    again = build_family_model("oasst-llama", tmp_path / "again", llama_spm_vocab)
    for path in sorted(family_model_dirs["oasst-llama"].iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_family_gguf_carries_the_real_vocabulary(family_gguf, llama_spm_vocab):
    from gguf import GGUFReader

    assert family_gguf.parent.name.startswith("family-models")
    fields = GGUFReader(str(family_gguf)).fields
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 32000
    assert bytes(tokens.parts[tokens.data[15043]]).decode() == "\u2581Hello"
    assert fields["tokenizer.ggml.bos_token_id"].contents() == BOS
    assert fields["tokenizer.ggml.eos_token_id"].contents() == EOS


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_llama_cpp_tokenizes_the_family_gguf_like_its_own_test_vectors(family_gguf, llama_spm_vocab):
    import llama_cpp

    model = llama_cpp.Llama(model_path=str(family_gguf), vocab_only=True, verbose=False)
    matched, wrong = count_matches(lambda text: model.tokenize(text.encode(), add_bos=False, special=False),
                                   llama_spm_vocab.vectors)
    assert wrong == [] and matched == 46
    assert model.tokenize(b"</s>", add_bos=False, special=True) == [EOS]
    assert EOS not in model.tokenize(b"</s>", add_bos=False, special=False)


def test_vocabulary_cache_is_outside_the_repository(llama_spm_vocab, repo_root: Path):
    assert repo_root not in llama_spm_vocab.folder.resolve().parents
