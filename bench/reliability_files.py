"""Bad files for every parser a user can feed: mutations of a valid sample, and hand-made traps.

A parser passes a case when it returns normally or raises a CorralError (a message meant for
the user, naming the file); any other exception is a crash. Each (parser, mutation) is a kind.
"""
from __future__ import annotations

import base64
import json
import random
import struct
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from modules.core.errors import CorralError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, body: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc & 0xFFFFFFFF)


def png_card(card: Any, keyword: bytes = b"chara", kind: bytes = b"tEXt") -> bytes:
    """A 1x1 PNG with a TavernAI card (base64 JSON) in a text chunk."""
    payload = card if isinstance(card, bytes) else base64.b64encode(json.dumps(card).encode())
    body = keyword + b"\x00" + (b"\x00" + zlib.compress(payload) if kind == b"zTXt" else payload)
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    pixels = png_chunk(b"IDAT", zlib.compress(b"\x00\x00\x00\x00"))
    return PNG_SIGNATURE + header + png_chunk(kind, body) + pixels + png_chunk(b"IEND", b"")


CARD = {"name": "Ada", "description": "A mathematician.", "first_mes": "Hello!", "personality": "curious",
        "scenario": "", "mes_example": "", "spec": "chara_card_v2", "data": {"name": "Ada", "first_mes": "Hi"}}


def generic_mutations(sample: bytes) -> dict[str, bytes]:
    """Byte-level damage any file can suffer."""
    rng = random.Random(17)
    out = {"empty": b"", "nul-bytes": b"\x00" * 64, "random-bytes": rng.randbytes(512),
           "latin1-text": sample.decode("utf-8", "replace").encode("latin-1", "replace") + b"\xe9\xff",
           "utf16-bom": b"\xff\xfe" + sample.decode("utf-8", "replace").encode("utf-16-le"),
           "doubled": sample * 2, "nul-inside": sample[: len(sample) // 2] + b"\x00" + sample[len(sample) // 2:]}
    for percent in (1, 10, 50, 90, 99):
        out[f"truncated-{percent}%"] = sample[: len(sample) * percent // 100]
    for seed in range(3):
        flipped = bytearray(sample)
        for _ in range(max(1, len(sample) // 50)):
            index = random.Random(seed * 1000 + _).randrange(len(flipped) or 1)
            if flipped:
                flipped[index] ^= 1 << (index % 8)
        out[f"bit-flips-{seed}"] = bytes(flipped)
    return out


def yaml_mutations(sample: dict) -> dict[str, bytes]:
    """Structural damage to a YAML mapping: wrong top type, wrong value types, YAML's own traps."""
    key = next(iter(sample), "key")
    out = {"top-list": b"- a\n- b\n", "top-scalar": b"just text\n", "top-null": b"null\n", "top-number": b"42\n",
           "tab-indent": b"a:\n\tb: 1\n", "unclosed-bracket": b"a: [1, 2\n", "unclosed-quote": b'a: "x\n',
           "python-tag": b"a: !!python/object/apply:os.system ['true']\n",
           "billion-laughs": b'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
                             b'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
           "deep-nesting": b"a: " + b"[" * 1500 + b"]" * 1500 + b"\n",
           "duplicate-keys": yaml.safe_dump(sample).encode() * 2,
           "unknown-key": yaml.safe_dump({**sample, "no_such_setting_here": 1}).encode(),
           "integer-keys": b"1: 2\n3: [4]\n", "binary-tag": b"a: !!binary aGVsbG8=\n",
           "huge-number": yaml.safe_dump({**sample, key: 10**400}).encode(), "infinity": f"{key}: .inf\n".encode(),
           "nan": f"{key}: .nan\n".encode()}
    for label, value in {"null": None, "list": [1, 2], "mapping": {"x": 1}, "bool": True, "text": "junk",
                         "negative": -1, "huge": 10**30, "tiny": 1e-300, "long-text": "x" * 100_000}.items():
        for name in list(sample)[:12]:
            out[f"{name}={label}"] = yaml.safe_dump({**sample, name: value}).encode()
    return out


def png_mutations() -> dict[str, bytes]:
    good = png_card(CARD)
    bomb = png_chunk(b"zTXt", b"chara\x00\x00" + zlib.compress(b"A" * 64 * 2**20))
    body = good[len(PNG_SIGNATURE):]
    return {
        "png-good": good, "png-ztxt-card": png_card(CARD, kind=b"zTXt"),
        "png-bad-crc": PNG_SIGNATURE + png_chunk(b"tEXt", b"chara\x00" + base64.b64encode(b"{}"), crc=0),
        "png-length-overflow": PNG_SIGNATURE + struct.pack(">I", 0xFFFFFFFF) + b"tEXt" + b"x" * 20,
        "png-inflate-bomb": PNG_SIGNATURE + bomb + png_chunk(b"IEND", b""),
        "png-bad-base64": png_card(b"!!!not base64!!!"), "png-base64-not-json": png_card(base64.b64encode(b"\xff{")),
        "png-json-list": png_card([1, 2, 3]), "png-json-null": png_card(None), "png-card-wrong-types": png_card(
            {"name": 5, "first_mes": ["x"], "description": {"a": 1}, "data": "text"}),
        "png-no-card": png_card(CARD, keyword=b"Comment"), "png-no-iend": good[:-12],
        "png-only-signature": PNG_SIGNATURE, "png-truncated-chunk": good[: len(PNG_SIGNATURE) + 30],
        "png-itxt-malformed": PNG_SIGNATURE + png_chunk(b"iTXt", b"chara\x00\x01\x00") + png_chunk(b"IEND", b""),
        "png-itxt-compressed-junk": PNG_SIGNATURE + png_chunk(b"iTXt", b"chara\x00\x01\x00\x00\x00junk")
                                    + png_chunk(b"IEND", b""),
        "png-huge-name": png_card({**CARD, "name": "n" * 100_000}),
        "png-traversal-name": png_card({**CARD, "name": "../../etc/passwd"}),
        "png-nul-name": png_card({**CARD, "name": "a\x00b"}), "png-body-reversed": PNG_SIGNATURE + body[::-1],
    }


def gguf_mutations(sample: bytes) -> dict[str, bytes]:
    header = b"GGUF" + struct.pack("<I", 3)
    return {
        "gguf-magic-only": b"GGUF", "gguf-version-0": b"GGUF" + struct.pack("<I", 0) + b"\x00" * 16,
        "gguf-version-99": b"GGUF" + struct.pack("<I", 99) + b"\x00" * 16,
        "gguf-huge-counts": header + struct.pack("<QQ", 2**62, 2**62),
        "gguf-huge-string": header + struct.pack("<QQ", 0, 1) + struct.pack("<Q", 2**60) + b"key",
        "gguf-bad-value-type": header + struct.pack("<QQ", 0, 1) + struct.pack("<Q", 3) + b"key"
                               + struct.pack("<I", 999),
        "gguf-html": b"<html>404 Not Found</html>" * 20,
        **{f"gguf-{k}": v for k, v in generic_mutations(sample).items() if not k.startswith("utf16")},
    }


@dataclass
class FileCase:
    kind: str
    data: bytes


@dataclass
class Parser:
    """One way a user's file reaches us: ``run(folder, data)`` feeds ``data`` through the real code."""

    name: str
    run: Callable[[Path, bytes], Any]
    cases: list[FileCase]


def try_case(parser: Parser, case: FileCase, folder: Path) -> str | None:
    """None when the parser accepted the file or refused it with a CorralError; else what crashed."""
    try:
        parser.run(folder, case.data)
    except CorralError as err:
        if len(str(err)) < 15:
            return f"unclear message: {err!r}"
        return None
    except RecursionError:
        return "RecursionError"
    except Exception as err:  # noqa: BLE001 - this is what the suite counts
        where = traceback.extract_tb(err.__traceback__)[-1]
        return f"{type(err).__name__}: {str(err)[:150]} (at {Path(where.filename).name}:{where.lineno})"
    return None
