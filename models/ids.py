"""Record ids as callers send them: a string that is a well-formed ObjectId, or no such record."""

from __future__ import annotations

from bson import ObjectId
from bson.errors import InvalidId

from models.errors import NotFound


def parse_id(raw: str, what: str = "record") -> ObjectId:
    """`raw` as an ObjectId; a malformed id names no record, so it is NotFound, not bad input."""
    try:
        return ObjectId(raw)
    except (InvalidId, TypeError):
        raise NotFound(f"No such {what}.") from None
