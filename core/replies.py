"""Redis replies as text, in one place.

Our Redis clients don't decode responses (``decode_responses`` is off: RQ stores pickled
bytes through the same connections), so every reply is bytes. redis-py types them as
``bytes | str`` (and often ``| None``), because a client *may* decode. Turning them into
text here, and nowhere else, means mypy checks every other use: a caller gets ``str``
(or ``str | None`` where Redis may answer nil) and cannot forget the None case or call
``.decode()`` on something that might already be a ``str``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from redis.typing import (
    EncodableT,
    FieldT,
    StreamRangeResponse,
    XClaimResponse,
    XPendingRangeResponse,
    XReadGroupResponse,
    ZSetRangeResponse,
)

Fields = dict[FieldT, EncodableT]
"""A mapping for HSET (or XADD). redis-py asks for ``Mapping[FieldT, EncodableT]``, and
Mapping is invariant in its key, so a ``dict[str, str]`` does not fit: annotate the dict
as ``Fields`` where it is built."""

Entry = tuple[str, dict[str, str]]
"""A stream entry as text: (entry id, fields)."""


class Pending(NamedTuple):
    """One entry of a consumer group's pending list (XPENDING with a range)."""

    message_id: str
    times_delivered: int


def text(raw: bytes | str) -> str:
    """A reply Redis always gives (a member, a field, an entry id) as text."""
    return raw.decode() if isinstance(raw, bytes) else raw


def binary(raw: bytes | str) -> bytes:
    """A value that is not text (RQ's pickled, maybe compressed job data) as bytes."""
    return raw if isinstance(raw, bytes) else raw.encode()


def text_or_none(raw: bytes | str | None) -> str | None:
    """A reply that may be nil (GET, HGET of a missing key or field) as text or None."""
    return None if raw is None else text(raw)


def text_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash (HGETALL) or a stream entry's fields as text; empty when the key is missing."""
    return {text(k): text(v) for k, v in raw.items()}


def members(reply: ZSetRangeResponse) -> list[str]:
    """The members of a ZRANGE or ZREVRANGE reply asked without scores, as text."""
    out: list[str] = []
    for item in reply:
        if not isinstance(item, bytes | str):
            raise TypeError("a reply with scores holds pairs, not members")
        out.append(text(item))
    return out


def entries(reply: XClaimResponse | None) -> list[Entry]:
    """The entries of an XRANGE, XREVRANGE or XCLAIM reply, as text, in reply order.

    An id without fields (an entry deleted while it was pending, which XCLAIM may still
    name) is left out: there is nothing to read in it.
    """
    out: list[Entry] = []
    for item in reply or []:
        if isinstance(item, bytes | str):
            raise TypeError("an XCLAIM JUSTID reply holds ids, not entries")
        entry_id, fields = item
        if entry_id is not None and fields:
            out.append((text(entry_id), text_hash(fields)))
    return out


def entry_ids(reply: StreamRangeResponse | None) -> list[str]:
    """The ids of an XRANGE or XREVRANGE reply's entries as text, in reply order, leaving
    their fields undecoded (counting or paging a long stream reads only the ids)."""
    return [text(entry_id) for entry_id, _ in reply or [] if entry_id is not None]


def entry_values(reply: StreamRangeResponse | None, name: str) -> list[tuple[str, bytes]]:
    """(entry id as text, the value of field ``name`` as bytes) for each entry of an XRANGE
    or XREVRANGE reply, in reply order.

    For values the caller parses straight from bytes (JSON): no decode to text and no
    dict per entry on the way. An entry without the field is refused, not skipped, so a
    malformed stream is noticed rather than read short.
    """
    out: list[tuple[str, bytes]] = []
    for entry_id, fields in reply or []:
        if entry_id is None:
            continue
        value = None if fields is None else fields.get(name.encode(), fields.get(name))
        if value is None:
            raise TypeError(f"stream entry {text(entry_id)} has no field {name!r}")
        out.append((text(entry_id), binary(value)))
    return out


def group_entries(reply: XReadGroupResponse) -> list[Entry]:
    """The entries of an XREADGROUP reply, all streams together, as text.

    Our clients speak RESP2, whose reply is a list of ``[stream, entries]``; RESP3's
    dict by stream is refused rather than misread.
    """
    if isinstance(reply, dict):
        raise TypeError("XREADGROUP replied in RESP3 form; the clients use RESP2")
    return [entry for _, batch in reply for entry in entries(batch)]


def pending(reply: XPendingRangeResponse) -> list[Pending]:
    """The entries of an XPENDING range reply (ids as text, delivery counts)."""
    out: list[Pending] = []
    for item in reply:
        message_id, times = item["message_id"], item["times_delivered"]
        if isinstance(message_id, int) or not isinstance(times, int):
            raise TypeError(f"unexpected XPENDING entry {item!r}")
        out.append(Pending(text(message_id), times))
    return out
