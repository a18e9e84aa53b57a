"""Whether an artifact can run code when loaded, and the digest that pins its content."""

from __future__ import annotations

import bz2
import hashlib
import lzma
import pickle
import zlib
from pathlib import Path
from typing import BinaryIO, Final

CHUNK_SIZE: Final = 1 << 20
"""Bytes read at a time when hashing or copying artifacts."""

# Suffixes under which pickle, joblib, cloudpickle and torch save objects.
PICKLE_SUFFIXES: Final = frozenset(
    {".pkl", ".pickle", ".joblib", ".cloudpickle", ".pt", ".pth", ".sav"}
)

_ZIP_MAGIC: Final = b"PK\x03\x04"
_GZIP_MAGIC: Final = b"\x1f\x8b"
_BZ2_MAGIC: Final = b"BZh"
_XZ_MAGIC: Final = b"\xfd7zXZ\x00"
_LZMA_ALONE_MAGIC: Final = b"]\x00\x00"
_LZ4_FRAME_MAGIC: Final = b"\x04\x22\x4d\x18"
_LEGACY_JOBLIB_MAGIC: Final = b"ZF0x"  # joblib < 0.10: "ZF" and the hex length
# bz2 emits nothing until a whole block (up to 900 kB) has arrived; stop looking after this.
_PEEK_LIMIT: Final = 2 * CHUNK_SIZE


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of the file at `path`, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as stream:
        while n := stream.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def is_pickle_family(path: Path) -> bool:
    """True when loading the file would unpickle: pickle, joblib (any compression), cloudpickle.

    Decided by the file name's suffix or, whatever the name, by its first bytes: the pickle
    protocol 2+ header, or a compressed container whose content starts with one. Compressed
    files whose content cannot be inspected count as pickle-family, which errs on the side of
    asking for trust. Zip files (skops, for one) and the text or protobuf formats of ONNX,
    XGBoost and LightGBM are not pickle-family.
    """
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    with path.open("rb") as stream:
        head = stream.read(8)
        if _is_pickle_header(head):
            return True
        if head.startswith(_ZIP_MAGIC):
            return False
        if head.startswith((_LZ4_FRAME_MAGIC, _LEGACY_JOBLIB_MAGIC)):
            # No standard-library decoder for either: assume the worst.
            return True
        found = _decompressor_for(head)
        if found is None:
            return False
        decompressor, unambiguous = found
        stream.seek(0)
        content = _peek(stream, decompressor)
    if content is None:
        # Undecodable behind an unambiguous magic: assume the worst. zlib's magic also starts
        # ordinary text ("x^..."), so there an undecodable stream means "not compressed".
        return unambiguous
    return _is_pickle_header(content)


def _is_pickle_header(head: bytes) -> bool:
    """Pickle protocols 2 and later open with PROTO (0x80) and the protocol number."""
    return (
        len(head) >= 2
        and head[0] == pickle.PROTO[0]
        and 2 <= head[1] <= max(5, pickle.HIGHEST_PROTOCOL)
    )


class _ZlibPeek:
    """Incremental zlib/gzip decoding behind the interface lzma and bz2 decoders share."""

    def __init__(self, wbits: int) -> None:
        self._inner = zlib.decompressobj(wbits)

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        return self._inner.decompress(data, max(max_length, 0))


_Decompressor = _ZlibPeek | bz2.BZ2Decompressor | lzma.LZMADecompressor


def _decompressor_for(head: bytes) -> tuple[_Decompressor, bool] | None:
    """A decoder for the compressed container joblib wrote, and whether its magic is unambiguous."""
    if head.startswith(_GZIP_MAGIC):
        return _ZlibPeek(16 + zlib.MAX_WBITS), True
    if head.startswith(_BZ2_MAGIC):
        return bz2.BZ2Decompressor(), True
    if head.startswith(_XZ_MAGIC):
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ), True
    if head.startswith(_LZMA_ALONE_MAGIC):
        return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE), True
    # zlib: deflate with a 32 KiB window (0x78) and a header whose check bits are valid.
    if len(head) >= 2 and head[0] == 0x78 and ((head[0] << 8) | head[1]) % 31 == 0:
        return _ZlibPeek(zlib.MAX_WBITS), False
    return None


def _peek(stream: BinaryIO, decompressor: _Decompressor) -> bytes | None:
    """The first decoded bytes of a compressed stream, or None when they cannot be had."""
    seen = 0
    out = b""
    try:
        while len(out) < 2 and seen < _PEEK_LIMIT:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            seen += len(chunk)
            out += decompressor.decompress(chunk, 16)
    except (zlib.error, OSError, EOFError, lzma.LZMAError):
        return None
    return out if len(out) >= 2 else None
