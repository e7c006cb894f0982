"""Character files from other front ends: web UI YAML/JSON, Pygmalion JSON, TavernAI PNG cards."""
from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from modules.core.character_cards import parse_character_file
from modules.core.errors import BadNameError, CorralError
from modules.core.store import Store

V1_CARD = {
    "name": "Seraphina",
    "description": "A guardian of the forest.",
    "personality": "gentle, wise",
    "scenario": "{{user}} wakes up in {{char}}'s glade.",
    "first_mes": "*Seraphina smiles.* You're awake.",
    "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: A friend.",
}


def png_card(card: dict | None, how: str = "tEXt") -> bytes:
    """A real 8x8 PNG written by Pillow, with the card in a text chunk of kind ``how``."""
    info = PngInfo()
    if card is not None:
        encoded = base64.b64encode(json.dumps(card).encode()).decode("ascii")
        if how == "iTXt":
            info.add_itxt("chara", encoded)
        else:
            info.add_text("chara", encoded, zip=how == "zTXt")
    info.add_text("Software", "test")
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def test_web_ui_yaml():
    data = b"name: Chiharu\ngreeting: |-\n  Hi there!\ncontext: |-\n  Chiharu is a robot.\n"
    assert parse_character_file("Chiharu.yaml", data) == {
        "name": "Chiharu", "greeting": "Hi there!", "context": "Chiharu is a robot.", "picture": None}


def test_web_ui_json_takes_the_file_stem_when_unnamed():
    data = json.dumps({"greeting": "Yo", "context": "A pirate."}).encode()
    card = parse_character_file("uploads/Captain.json", data)
    assert (card["name"], card["greeting"], card["context"]) == ("Captain", "Yo", "A pirate.")


def test_pygmalion_json():
    data = json.dumps({
        "char_name": "Lily", "char_greeting": "Hello!", "char_persona": "cheerful",
        "world_scenario": "A cafe.", "example_dialogue": "You: hi\nLily: hi!",
    }).encode()
    card = parse_character_file("lily.json", data)
    assert (card["name"], card["greeting"]) == ("Lily", "Hello!")
    assert card["context"] == "Lily's personality: cheerful\n\nScenario: A cafe.\n\nYou: hi\nLily: hi!"


def test_tavern_v1_json_file_keeps_placeholders():
    card = parse_character_file("seraphina.json", json.dumps(V1_CARD).encode())
    assert card["name"] == "Seraphina" and card["greeting"] == V1_CARD["first_mes"]
    assert card["context"] == (
        "A guardian of the forest.\n\nSeraphina's personality: gentle, wise\n\n"
        "Scenario: {{user}} wakes up in {{char}}'s glade.\n\n" + V1_CARD["mes_example"])


@pytest.mark.parametrize("how", ["tEXt", "zTXt", "iTXt"])
def test_tavern_v1_png_card(how: str):
    png = png_card(V1_CARD, how)
    card = parse_character_file("seraphina.png", png)
    assert card["name"] == "Seraphina"
    assert card["greeting"] == "*Seraphina smiles.* You're awake."
    assert "A guardian of the forest." in card["context"]
    assert card["picture"] == png
    assert Image.open(io.BytesIO(card["picture"])).size == (8, 8)


def test_tavern_v2_png_card():
    v2 = {"spec": "chara_card_v2", "spec_version": "2.0",
          "data": {**V1_CARD, "name": "Seraphina v2", "first_mes": "Welcome back.", "tags": ["fantasy"]}}
    card = parse_character_file("card.png", png_card(v2))
    assert (card["name"], card["greeting"]) == ("Seraphina v2", "Welcome back.")
    assert card["context"].startswith("A guardian of the forest.\n\nSeraphina v2's personality: gentle, wise")


def test_png_card_saved_in_the_store_keeps_its_picture(tmp_path: Path):
    card = parse_character_file("seraphina.png", png_card(V1_CARD))
    with Store(tmp_path / "corral.db") as store:
        store.save_character("local", card["name"], card["greeting"], card["context"], card["picture"])
        assert store.get_character("local", "Seraphina")["picture"] == card["picture"]


def corrupt_crc_of_chara_chunk(png: bytes) -> bytes:
    at = png.index(b"tEXtchara")
    length = struct.unpack(">I", png[at - 4:at])[0]
    crc_at = at + 4 + length
    return png[:crc_at] + bytes([png[crc_at] ^ 0xFF]) + png[crc_at + 1:]


def chara_chunk(text: bytes) -> bytes:
    body = b"chara\0" + text
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))


@pytest.mark.parametrize("file_name, data, problem", [
    ("plain.png", png_card(None), "no character card"),
    ("cut.png", png_card(V1_CARD)[:60], "cut short"),
    ("damaged.png", corrupt_crc_of_chara_chunk(png_card(V1_CARD)), "bad checksum"),
    ("notb64.png", png_card(None)[:8] + chara_chunk(b"***not base64***"), "not base64-encoded JSON"),
    ("list.png", png_card(None)[:8] + chara_chunk(base64.b64encode(b"[1, 2]")), "not a JSON object"),
    ("binary.yaml", b"\xff\xfe\x00garbage", "neither a PNG card nor UTF-8"),
    ("broken.json", b'{"name": "x",', "not valid JSON or YAML"),
    ("list.yaml", b"- a\n- b\n", "no mapping"),
    ("empty.yaml", b"", "no mapping"),
    ("other.yaml", b"colour: blue\n", "none of the fields"),
    ("nested.yaml", b"name: X\ngreeting:\n  a: 1\n", "'greeting' must be text"),
    ("v2.json", b'{"spec": "chara_card_v2", "data": 5}', "no 'data' object"),
])
def test_malformed_files_name_the_file_and_the_problem(file_name: str, data: bytes, problem: str):
    with pytest.raises(CorralError) as caught:
        parse_character_file(file_name, data)
    message = str(caught.value)
    assert file_name in message and problem in message


@pytest.mark.parametrize("card_name", ["../evil", "/etc/passwd", "a/b", ".."])
def test_card_names_that_are_paths_are_refused(card_name: str):
    with pytest.raises(BadNameError, match="evil.json"):
        parse_character_file("evil.json", json.dumps({"name": card_name, "greeting": "hi"}).encode())
    with pytest.raises(BadNameError):
        parse_character_file("evil.png", png_card({**V1_CARD, "name": card_name}))
