"""The example extension: every hook Corral calls, each one doing nothing, as a template.

Copy this folder to extensions/my_extension/, delete the hooks you do not need
(every hook is optional), and enable it with ``--extensions my_extension``, the
``extensions:`` list of the settings file, or the Session tab.

Hooks run in the order extensions are enabled. In one chat turn:
history_modifier -> state_modifier -> chat_input_modifier -> input_modifier ->
bot_prefix_modifier -> tokenizer_modifier -> logits_processor_modifier ->
(generation) -> output_modifier. The notebook and the API run the same hooks
minus the chat-only ones. A hook that raises is reported and skipped for that
turn; it never stops a reply.

Talk to Corral only through ``modules.extension_api`` (encode, decode, generate,
current_history, model_name, ...): it is the part promised to stay stable.
"""
import gradio as gr

from modules import extension_api as corral

# Settings. ``display_name`` labels the extension's UI; ``is_tab`` puts ui() in its own
# top-level tab instead of the block under the chat. A settings-file key
# ``example-greeting: Hi`` would replace params["greeting"] before setup() runs.
params = {
    "display_name": "Example",
    "is_tab": False,
    "greeting": "Hello from the example extension",
}

log = corral.logger("example")


def setup():
    """Once, when the extension loads (after the settings file's overrides)."""
    log.info("example extension loaded; greeting=%r", params["greeting"])


def history_modifier(history):
    """Chat only, first of all. ``history`` is {"internal": [[user, bot], ...],
    "visible": [[user, bot], ...]}: the prompt texts and the shown texts. Return it."""
    return history


def state_modifier(state):
    """Every path. ``state`` holds every generation setting (temperature, max_new_tokens, mode,
    name1/name2, interface = "chat" | "notebook" | "api", chat_id...). Changed sampler values
    are used for this reply only."""
    return state


def chat_input_modifier(text, visible_text, state):
    """Chat only: the user's message as the prompt will hold it, and as the chat shows it."""
    return text, visible_text


def input_modifier(string, state, is_chat=False):
    """Chat: the user's message (prompt form). Notebook/API completions: the whole prompt.
    Declaring only (string) or (string, state) is fine too."""
    return string


def bot_prefix_modifier(string, state):
    """Chat: text the reply starts with in the prompt (hidden from the shown reply).
    Not called to continue a reply or to impersonate."""
    return string


def tokenizer_modifier(state, prompt, input_ids, input_embeds):
    """After tokenizing, for loaders that sample in Python. ``input_ids`` is a [1, L] tensor;
    ``input_embeds`` is None (Corral generates from token ids)."""
    return prompt, input_ids, input_embeds


def logits_processor_modifier(processor_list, input_ids):
    """Append transformers LogitsProcessors to ``processor_list`` (they run after Corral's own
    samplers' penalties). Return None to keep the list, or a list to replace it."""
    return None


def output_modifier(string, state, is_chat=False):
    """Chat: the shown reply only (the prompt history keeps the raw text), once at the end, and
    on the greeting. Notebook/API: the whole output."""
    return string


def custom_css():
    """CSS added to the page."""
    return ""


def custom_js():
    """JavaScript run when the page loads."""
    return ""


def ui():
    """Build Gradio components (inside a block under the chat, or a tab when is_tab)."""
    with gr.Row():
        box = gr.Textbox(value=params["greeting"], label="Greeting (example setting)")
    box.change(lambda value: params.update(greeting=value), box, None)


# Two more hooks exist; each replaces a part of Corral, and only the first enabled extension
# that defines it is used. They are left out here on purpose, because merely defining them
# changes behaviour:
#
# def custom_generate_chat_prompt(user_input, state, **kwargs):
#     """Build the whole prompt yourself (kwargs: _continue, impersonate, history). None: Corral builds it."""
#
# def custom_generate_reply(question, original_question, state, stopping_strings=None, is_chat=False):
#     """Replace the model: yield the reply so far, growing, e.g. yield "Hel"; yield "Hello"."""
#
# def custom_tokenized_length(prompt):
#     """Count tokens your way (used to cut old turns so the prompt fits)."""
