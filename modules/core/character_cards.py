"""Reading character files made for other front ends: pure functions, no storage.

Accepted:
- YAML or JSON as text-generation-webui writes it (``name``, ``greeting``, ``context``);
- the older Pygmalion JSON (``char_name``, ``char_greeting``, ``char_persona``,
  ``world_scenario``, ``example_dialogue``);
- TavernAI / SillyTavern cards: PNG pictures whose ``chara`` text chunk holds
  base64 JSON, either v1 fields at the top level or v2 ``{"spec":
  "chara_card_v2", "data": {...}}``; the same JSON as a plain file works too.
  The PNG itself becomes the character's picture.

Placeholders such as ``{{char}}`` and ``{{user}}`` are kept as written; prompt
building fills them in.
"""
from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import yaml

from modules.core.errors import BadNameError, CorralError
from modules.core.paths import check_name

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("chara", "ccv3")  # v3 cards carry both; "chara" is read first
MAX_TEXT_CHUNK = 16 * 1024 * 1024  # a compressed chunk may not inflate beyond this
_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


class _Problem(Exception):
    """Internal: what is wrong, before the file name is attached."""


def parse_character_file(name: str, data: bytes) -> dict[str, Any]:
    """``{"name", "greeting", "context", "picture"}`` from a character file's bytes.

    ``name`` is the file name: it picks the format and names the file in
    errors; its stem is the character's name when the file has none.
    """
    file_name = Path(name).name
    try:
        if data.startswith(PNG_SIGNATURE):
            card = card_from_png(data)
            picture: bytes | None = data
        else:
            card = mapping_from_text(file_name, data)
            picture = None
        fields = character_fields(card)
    except _Problem as problem:
        raise CorralError(f"Character file {file_name!r} cannot be read: {problem}") from None
    fields["name"] = _character_name(fields["name"] or Path(file_name).stem, file_name)
    return fields | {"picture": picture}


def _character_name(name: str, file_name: str) -> str:
    try:
        return check_name(name, "character")
    except BadNameError as err:
        raise BadNameError(f"Character file {file_name!r}: {err}") from None


def mapping_from_text(file_name: str, data: bytes) -> dict[str, Any]:
    """A YAML or JSON file's top-level mapping."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _Problem(f"it is neither a PNG card nor UTF-8 text ({err}).") from None
    try:
        if file_name.lower().endswith(".json") or text.lstrip().startswith("{"):
            parsed = json.loads(text)
        else:
            parsed = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as err:
        raise _Problem(f"it is not valid JSON or YAML ({err}).") from None
    if not isinstance(parsed, dict):
        raise _Problem("it holds no mapping of fields (expected keys such as name, greeting, context).")
    return parsed


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of each chunk, up to IEND; checks lengths and, for text chunks, the CRC."""
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset < len(data):
        if offset + 8 > len(data):
            raise _Problem("the PNG is cut short.")
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        crc = data[offset + 8 + length:offset + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise _Problem("the PNG is cut short.")
        if kind in _TEXT_CHUNKS and struct.unpack(">I", crc)[0] != zlib.crc32(kind + body):
            raise _Problem(f"a {kind.decode()} chunk of the PNG is damaged (bad checksum).")
        chunks.append((kind, body))
        offset += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _inflate(compressed: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(compressed, MAX_TEXT_CHUNK)
    except zlib.error as err:
        raise _Problem(f"a compressed PNG text chunk is damaged ({err}).") from None
    if inflater.unconsumed_tail:
        raise _Problem("a compressed PNG text chunk is too large.")
    return text


def decode_text_chunk(kind: bytes, body: bytes) -> tuple[str, str]:
    """(keyword, text) of a tEXt, zTXt or iTXt chunk."""
    keyword, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return keyword.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return keyword.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    compressed, rest = rest[:1] == b"\1", rest[2:]
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    text = _inflate(text) if compressed else text
    try:
        return keyword.decode("latin-1"), text.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Problem(f"an iTXt chunk is not UTF-8 ({err}).") from None


def card_from_png(data: bytes) -> dict[str, Any]:
    """The JSON card in a PNG's ``chara`` (or ``ccv3``) text chunk."""
    texts: dict[str, str] = {}
    for kind, body in png_chunks(data):
        if kind in _TEXT_CHUNKS:
            keyword, text = decode_text_chunk(kind, body)
            texts.setdefault(keyword, text)
    encoded = next((texts[k] for k in CARD_KEYWORDS if k in texts), None)
    if encoded is None:
        raise _Problem("the PNG has no character card in it (no 'chara' text chunk).")
    try:
        card = json.loads(base64.b64decode("".join(encoded.split()), validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise _Problem(f"the PNG's 'chara' chunk is not base64-encoded JSON ({err}).") from None
    if not isinstance(card, dict):
        raise _Problem("the PNG's card is not a JSON object.")
    return card


def _text(card: dict[str, Any], key: str) -> str:
    value = card.get(key)
    if value is None:
        return ""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value).strip()
    raise _Problem(f"field {key!r} must be text, not {type(value).__name__}.")


def compose_context(name: str, description: str, personality: str, scenario: str, examples: str) -> str:
    """One context text from a card's separate parts, skipping the empty ones."""
    parts = [
        description,
        f"{name}'s personality: {personality}" if personality else "",
        f"Scenario: {scenario}" if scenario else "",
        examples,
    ]
    return "\n\n".join(part for part in parts if part)


def character_fields(card: dict[str, Any]) -> dict[str, str]:
    """name, greeting and context from any of the accepted card layouts."""
    spec = str(card.get("spec", ""))
    if spec.startswith("chara_card_v"):
        card = card.get("data")
        if not isinstance(card, dict):
            raise _Problem(f"the {spec} card has no 'data' object.")
    if "char_name" in card or "char_persona" in card:
        name = _text(card, "char_name")
        context = compose_context(
            name, "", _text(card, "char_persona"),
            _text(card, "world_scenario"), _text(card, "example_dialogue"),
        )
        return {"name": name, "greeting": _text(card, "char_greeting"), "context": context}
    if any(key in card for key in ("first_mes", "description", "personality", "mes_example")):
        name = _text(card, "name")
        context = compose_context(
            name, _text(card, "description"), _text(card, "personality"),
            _text(card, "scenario"), _text(card, "mes_example"),
        )
        return {"name": name, "greeting": _text(card, "first_mes"), "context": context}
    if not any(key in card for key in ("name", "greeting", "context")):
        raise _Problem("it has none of the fields name, greeting, context (or a TavernAI card's).")
    return {key: _text(card, key) for key in ("name", "greeting", "context")}
