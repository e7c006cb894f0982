"""long_replies: hold back newlines and the end-of-reply token until a minimum reply length.

A transformers LogitsProcessor, added through logits_processor_modifier. It
counts the reply's tokens from the first call (the prompt's length then), and
while fewer than ``min_length`` tokens are written it makes every token that
contains a newline, and every end-of-sequence token, impossible.
"""
import gradio as gr
import torch
from transformers import LogitsProcessor

from modules import extension_api as corral

params = {
    "display_name": "Long replies",
    "is_tab": False,
    "min_length": 120,
}


class HoldBackUntil(LogitsProcessor):
    """-inf for ``banned`` token ids until ``min_length`` new tokens exist."""

    def __init__(self, min_length: int, banned: list[int]):
        self.min_length = min_length
        self.banned = torch.tensor(sorted(set(banned)), dtype=torch.long)
        self.prompt_length = None

    def __call__(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[-1]
        written = input_ids.shape[-1] - self.prompt_length
        if written < self.min_length and len(self.banned):
            scores = scores.clone()
            scores[:, self.banned.to(scores.device)] = -float("inf")
        return scores


def newline_token_ids():
    """Every token of the loaded model whose text contains a newline."""
    return [i for i, text in enumerate(corral.token_texts()) if "\n" in text]


def logits_processor_modifier(processor_list, input_ids):
    minimum = int(params["min_length"])
    if minimum > 0:
        banned = newline_token_ids() + sorted(corral.eos_token_ids())
        processor_list.append(HoldBackUntil(minimum, banned))
    return processor_list


def ui():
    length = gr.Slider(0, 1000, value=params["min_length"], step=10,
                       label="Minimum reply length (tokens) before a newline or the end")
    length.change(lambda value: params.update(min_length=int(value)), length, None)
