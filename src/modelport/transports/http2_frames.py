"""HTTP/2's wire format (RFC 9113, RFC 7541): frame types, flags and error codes, frames, HPACK.

Pure functions and values, no connection state: `frame` and `goaway` build frames,
`header_block` encodes headers as HPACK literals without indexing (so the encoder keeps no
state), and `HeaderDecoder` decodes a peer's header blocks with `hpack`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast

import hpack

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

MAX_WINDOW: Final = 2**31 - 1
DEFAULT_WINDOW: Final = 65_535
DEFAULT_FRAME: Final = 16_384
MAX_HEADER_LIST: Final = 1 << 16
"""The largest decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE); larger is a peer error."""
KNOWN_BLOCKS: Final = 64
"""Decoded header blocks a connection remembers (see HeaderDecoder)."""
Header = tuple[str, str]


class ProtocolViolation(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY carrying `code`."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    """One frame: the 9-byte header, then the payload."""
    n = len(payload)
    return bytes((n >> 16, (n >> 8) & 255, n & 255, kind, flags)) + stream_id.to_bytes(4) + payload


def _integer(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer in an N-bit prefix (RFC 7541 §5.1), the prefix's other bits `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


def header_block(headers: Iterable[Header]) -> bytes:
    """HPACK for `headers`, each a literal field without indexing (names and values as given:
    names lower-case, values printable ASCII)."""
    out = bytearray()
    for name, value in headers:
        raw_name = name.encode("ascii")
        raw_value = value.encode("ascii")
        out += b"\x00" + _integer(len(raw_name), 7) + raw_name
        out += _integer(len(raw_value), 7) + raw_value
    return bytes(out)


class HeaderDecoder:
    """`hpack`'s decoder, remembering what a header block decoded to while the block leaves
    the dynamic table as it was and the table does not change.

    Clients send the very same block for call after call (grpc's C core, h2load: every
    header indexed or literal without indexing), and decoding it again costs about a fifth of
    a small call. Only decoding changes the table, so any decode that changes it forgets all.
    """

    def __init__(self) -> None:
        self._decoder = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST)
        self._known: dict[bytes, list[Header]] = {}

    def decode(self, block: bytes) -> list[Header]:
        """The headers of `block`; hpack.HPACKError when it is not valid HPACK."""
        known = self._known.get(block)
        if known is not None:
            return known
        table = self._decoder.header_table
        entries = table.dynamic_entries
        first = entries[0] if entries else None
        size, limit = len(entries), table.maxsize
        # Names and values as str (hpack's HeaderTuple is a tuple of two).
        headers = cast(list[Header], self._decoder.decode(block))
        # A new entry is always a new leftmost tuple; an eviction alone changes the length.
        unchanged = (
            len(entries) == size
            and (entries[0] if entries else None) is first
            and table.maxsize == limit
        )
        if not unchanged or len(self._known) >= KNOWN_BLOCKS:
            self._known.clear()
        if unchanged:
            self._known[block] = headers
        return headers


def goaway(last_id: int, code: int, reason: str) -> bytes:
    """A GOAWAY frame: the last stream we take, the error code, a reason for whoever debugs."""
    payload = last_id.to_bytes(4) + code.to_bytes(4) + reason.encode("utf-8", "replace")[:256]
    return frame(GOAWAY, 0, 0, payload)


def unpadded(flags: int, payload: bytes) -> bytes:
    """The payload of a PADDED frame without its pad length byte and padding."""
    if not payload or payload[0] >= len(payload):
        raise ProtocolViolation(PROTOCOL_ERROR, "padding as long as the frame")
    return payload[1 : len(payload) - payload[0]]
