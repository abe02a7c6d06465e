"""JSON text of source values: exact numbers, readable text, and what PostgreSQL can store."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

_DECIMAL = re.compile(r'"\\u0000dec:([^"\\]*)\\u0000"')
_SURROGATE = re.compile("[\ud800-\udfff]")


def dumps_exact(value: Any, *, ascii_only: bool) -> str:
    """Compact JSON with numbers written exactly as parsed (the decoder gives Decimal for fractions)."""

    def mark(v: Any) -> Any:
        if isinstance(v, Decimal):
            return f"\x00dec:{v}\x00"
        if isinstance(v, dict):
            return {k: mark(x) for k, x in v.items()}
        if isinstance(v, list):
            return [mark(x) for x in v]
        return v

    text = json.dumps(mark(value), ensure_ascii=ascii_only, separators=(",", ":"))
    return _DECIMAL.sub(r"\1", text) if "\\u0000dec:" in text else text


def has_surrogate(text: str) -> bool:
    """Does text hold a lone UTF-16 surrogate (which UTF-8, and so PostgreSQL, cannot hold)?"""
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def readable(text: str) -> str:
    """JSON text with each lone surrogate written as its \\u escape: valid UTF-8, the same JSON."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) if has_surrogate(text) else text


def raw_json(record: Any) -> str:
    """A record as a person reads it: its text as written (Cyrillic stays Cyrillic), JSON-equivalent
    to the source, and valid UTF-8 (NULs and other control characters are escaped by JSON itself)."""
    if isinstance(record, str) and type(record) is not str:  # the cut-off text of a salvaged file
        return readable(str(record))
    return readable(dumps_exact(record, ascii_only=False))
