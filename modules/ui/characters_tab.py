"""The Characters tab: create, edit and delete characters (name, greeting, context, picture),
import the YAML/JSON files and TavernAI PNG cards other front ends use, and the user's profile.

Characters and the profile live in the store, per user: the signed-in name, or "local"
when the app runs without accounts.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from modules.core.character_cards import parse_character_file
from modules.core.chat import Character
from modules.core.context import Context
from modules.core.errors import CorralError
from modules.core.store import DEFAULT_USER, Store

log = logging.getLogger(__name__)
CARD_TYPES = [".yaml", ".yml", ".json", ".png"]
MAX_CARD_BYTES = 20 * 1024 * 1024


def store_of(ctx: Context) -> Store:
    """The context's store; one is opened in user_data/ when the context was built without it."""
    store = getattr(ctx, "store", None) or ctx.services.get("store")
    if store is None:
        store = Store(ctx.config.user_data_dir / "corral.db")
        ctx.services["store"] = store
    return store


def user_of(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) if request is not None else None) or DEFAULT_USER


def character_of(ctx: Context, user: str, name: str | None) -> Character | None:
    """The stored character called ``name`` as the prompt builder wants it; None when none is chosen."""
    if not name:
        return None
    row = store_of(ctx).get_character(user, name)
    return Character(name=row["name"], greeting=row["greeting"], context=row["context"])


def character_names(ctx: Context, user: str) -> list[str]:
    return [row["name"] for row in store_of(ctx).list_characters(user)]


def save_character(ctx: Context, user: str, name: str, greeting: str, context: str,
                   picture_path: str | None) -> str:
    """Create or replace a character from the form; returns its (cleaned) name."""
    picture = Path(picture_path).read_bytes() if picture_path else None
    store_of(ctx).save_character(user, (name or "").strip(), greeting or "", context or "", picture)
    return (name or "").strip()


def import_character(ctx: Context, user: str, path: str) -> str:
    """Store the character in a YAML/JSON file or a TavernAI PNG card; returns its name."""
    file = Path(path)
    if file.stat().st_size > MAX_CARD_BYTES:
        raise CorralError(f"{file.name} is larger than {MAX_CARD_BYTES // 2**20} MB; a character file is far smaller.")
    card = parse_character_file(file.name, file.read_bytes())
    store_of(ctx).save_character(user, card["name"], card["greeting"], card["context"], card["picture"])
    return card["name"]


def picture_of(ctx: Context, user: str, name: str) -> Any:
    """The stored picture as a PIL image for gr.Image, or None."""
    data = store_of(ctx).get_character(user, name).get("picture")
    if not data:
        return None
    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except OSError:
        log.warning("The picture of character %r is not an image the browser can show.", name)
        return None


def save_profile(ctx: Context, user: str, user_name: str, user_bio: str) -> None:
    store = store_of(ctx)
    store.save_settings(user, {**store.get_settings(user), "user_name": user_name, "user_bio": user_bio})


# --- layout ---------------------------------------------------------------------------------------


def build(ui) -> None:
    ctx: Context = ui.ctx
    settings = ctx.config.settings
    store_of(ctx)  # open it now, on the main thread
    with gr.Row():
        ui.controls["character"] = gr.Dropdown([], value=settings.get("character", ""), label="Character (chat and chat-instruct modes)",
                                               elem_id="character", scale=4, allow_custom_value=True)
        refresh = gr.Button("Refresh", scale=1, elem_id="character-refresh")
        new = gr.Button("New", scale=1, elem_id="character-new")
    with gr.Row():
        with gr.Column(scale=3):
            name = gr.Textbox(label="Name", elem_id="character-name")
            greeting = gr.Textbox(label="Greeting", lines=3, elem_id="character-greeting")
            context = gr.Textbox(label="Context (who the character is; {{char}} and {{user}} are filled in)",
                                 lines=8, elem_id="character-context")
        with gr.Column(scale=2):
            picture = gr.Image(type="filepath", label="Picture", elem_id="character-picture", height=280)
    with gr.Row():
        save = gr.Button("Save character", variant="primary", elem_id="character-save")
        delete = gr.Button("Delete character", variant="stop", elem_id="character-delete")
    card = gr.File(label="Import a character: YAML, JSON or a TavernAI PNG card", file_types=CARD_TYPES,
                   elem_id="character-import")
    status = gr.Markdown(elem_id="character-status")
    with gr.Accordion("Your profile", open=False):
        ui.controls["user_name"] = gr.Textbox(settings.get("user_name", "You"), label="Your name",
                                              elem_id="user-name")
        ui.controls["user_bio"] = gr.Textbox(settings.get("user_bio", ""), lines=3, label="About you",
                                             elem_id="user-bio")
        save_me = gr.Button("Save profile", elem_id="profile-save")
    ui.components.update(character_refresh=refresh, character_new=new, character_name=name,
                         character_greeting=greeting, character_context=context, character_picture=picture,
                         character_save=save, character_delete=delete, character_import=card,
                         character_status=status, profile_save=save_me)


def wire(ui) -> None:
    _wire_editor(ui)
    _wire_import_and_profile(ui)


def _wire_editor(ui) -> None:
    """Choosing, saving, deleting and clearing a character."""
    ctx: Context = ui.ctx
    c = ui.components
    dropdown = ui.controls["character"]
    form = [c["character_name"], c["character_greeting"], c["character_context"], c["character_picture"]]
    status = c["character_status"]

    def listing(selected: str | None, request: gr.Request):
        names = character_names(ctx, user_of(request))
        return gr.update(choices=names, value=selected if selected in names else None)

    def show(name: str | None, request: gr.Request):
        if not name:
            return "", "", "", None, ""
        user = user_of(request)
        try:
            row = store_of(ctx).get_character(user, name)
        except CorralError as err:
            return *[gr.update()] * 4, f"⚠️ {err}"
        return row["name"], row["greeting"], row["context"], picture_of(ctx, user, name), ""

    def save(name: str, greeting: str, context: str, picture: str | None, request: gr.Request):
        user = user_of(request)
        try:
            saved = save_character(ctx, user, name, greeting, context, picture)
        except CorralError as err:
            return gr.update(), f"⚠️ {err}"
        return gr.update(choices=character_names(ctx, user), value=saved), f"Saved **{saved}**."

    def delete(name: str | None, request: gr.Request):
        if not name:
            return gr.update(), "Choose a character to delete."
        user = user_of(request)
        try:
            store_of(ctx).delete_character(user, name)
        except CorralError as err:
            return gr.update(), f"⚠️ {err}"
        return gr.update(choices=character_names(ctx, user), value=None), f"Deleted **{name}**."

    dropdown.change(show, dropdown, [*form, status], api_name="character_show")
    c["character_refresh"].click(listing, dropdown, dropdown, api_name="character_list")
    c["character_new"].click(lambda: ("", "", "", None, None), None, [*form, dropdown], api_visibility="private")
    c["character_save"].click(save, form, [dropdown, status], api_name="character_save")
    c["character_delete"].click(delete, dropdown, [dropdown, status], api_name="character_delete")


def _wire_import_and_profile(ui) -> None:
    """Importing character files, the profile, and restoring both when a page opens."""
    ctx: Context = ui.ctx
    c = ui.components
    dropdown, status = ui.controls["character"], c["character_status"]
    profile_fields = [ui.controls["user_name"], ui.controls["user_bio"]]

    def import_file(path: str | None, request: gr.Request):
        if not path:
            return gr.update(), gr.update(), ""
        user = user_of(request)
        try:
            name = import_character(ctx, user, path)
        except (CorralError, OSError) as err:
            return gr.update(), None, f"⚠️ {err}"
        return gr.update(choices=character_names(ctx, user), value=name), None, f"Imported **{name}**."

    def profile(user_name: str, user_bio: str, request: gr.Request) -> str:
        try:
            save_profile(ctx, user_of(request), user_name, user_bio)
        except CorralError as err:
            return f"⚠️ {err}"
        return "Saved your profile."

    def restore(request: gr.Request):
        user = user_of(request)
        saved = store_of(ctx).get_settings(user)
        names = character_names(ctx, user)
        return gr.update(choices=names), saved.get("user_name", gr.update()), saved.get("user_bio", gr.update())

    c["character_import"].upload(import_file, c["character_import"], [dropdown, c["character_import"], status],
                                 api_name="character_import")
    c["profile_save"].click(profile, profile_fields, status, api_name="profile_save")
    if "app" in c:
        c["app"].load(restore, None, [dropdown, *profile_fields], api_visibility="private")
