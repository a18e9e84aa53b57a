"""gRPC-over-HTTP/2 pieces that need no connection: timeouts, status blocks, message frames."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import urllib.parse
import zlib
from collections.abc import Callable

import grpc
import hpack
import pytest
import trustme

from modelport.transports import grpc_endpoint, grpc_wire


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600.0), ("2M", 120.0), ("5S", 5.0), ("100m", 0.1), ("250u", 250e-6), ("9n", 9e-9)],
)
def test_grpc_timeouts_in_every_unit(value: str, seconds: float) -> None:
    assert grpc_wire.timeout_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "S", "123456789S", "1.5S", "5s", "-1S"])
def test_a_malformed_grpc_timeout_is_invalid_argument(value: str) -> None:
    with pytest.raises(grpc_wire.GrpcError) as caught:
        grpc_wire.timeout_seconds(value)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc-timeout" in caught.value.message


def test_grpc_message_is_percent_encoded_and_decodes_back() -> None:
    text = "input 'x' must be FP32 (got «INT64») 100% sure\nnext line"
    encoded = grpc_wire.percent_encoded(text)
    assert encoded.isascii()
    assert "\n" not in encoded
    assert urllib.parse.unquote(encoded) == text


def test_a_trailers_only_status_carries_http_status_content_type_and_metadata() -> None:
    block = grpc_wire.status_block(
        grpc.StatusCode.NOT_FOUND, "no model 'x'", (("x-request-id", "r-1"),), only=True
    )
    assert hpack.Decoder().decode(block) == [
        (":status", "200"),
        ("content-type", "application/grpc"),
        ("grpc-status", "5"),
        ("grpc-message", "no model 'x'"),
        ("x-request-id", "r-1"),
    ]
    trailers = grpc_wire.status_block(grpc.StatusCode.OK, "", (), only=False)
    assert hpack.Decoder().decode(trailers) == [("grpc-status", "0")]


def test_a_message_frame_is_flag_length_and_bytes() -> None:
    assert grpc_wire.message_frame(b"hello") == b"\x00\x00\x00\x00\x05hello"


@pytest.mark.parametrize(("compress", "wbits"), [(gzip.compress, 31), (zlib.compress, 15)])
def test_inflating_stops_one_byte_past_the_limit(
    compress: Callable[[bytes], bytes], wbits: int
) -> None:
    """A compression bomb is too large once a byte past the limit is out, not after all of it."""
    bomb = compress(bytes(64 << 20))
    assert len(grpc_wire.inflated(bomb, 1000, wbits)) == 1001
    assert grpc_wire.inflated(compress(b"abc"), 3, wbits) == b"abc"


def test_a_compressed_message_cut_short_does_not_inflate() -> None:
    with pytest.raises(zlib.error):
        grpc_wire.inflated(gzip.compress(b"abcdef" * 100)[:-12], 10_000, 31)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_connection_whose_tls_handshake_fails_is_not_kept() -> None:
    """It is never made, so never lost: counting it would keep it (and hold up every stop)."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    context.set_alpn_protocols(["h2"])
    endpoint = grpc_endpoint.GrpcEndpoint({}, max_message_bytes=1024)
    port = await endpoint.start("127.0.0.1", 0, context)
    try:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # not a TLS ClientHello
            assert await reader.read() == b""  # the server gives up on the handshake
            writer.close()
        assert endpoint.connections == 0
    finally:
        await endpoint.stop(grace=1.0)
