"""HTTP/2 pieces that need no connection: frames and the stateless HPACK encoder."""

from __future__ import annotations

import hpack
import pytest

from modelport.transports import http2_frames as frames


@pytest.mark.parametrize("length", [0, 1, 126, 127, 128, 300, 70_000])
def test_header_blocks_decode_with_a_standard_hpack_decoder(length: int) -> None:
    headers = [(":status", "200"), ("content-type", "application/grpc"), ("x-long", "v" * length)]
    block = frames.header_block(headers)
    decoder = hpack.Decoder(max_header_list_size=1 << 20)
    assert decoder.decode(block) == headers
    # Without indexing, the decoder's table stays empty: the same block decodes again alike.
    assert decoder.decode(block) == headers
    assert len(decoder.header_table.dynamic_entries) == 0


def test_integers_beyond_their_prefix_continue_in_7_bit_groups() -> None:
    # RFC 7541 C.1.2: 1337 in a 5-bit prefix.
    assert frames._integer(1337, 5) == bytes([31, 154, 10])
    assert frames._integer(10, 5) == bytes([10])


def test_a_frame_is_its_9_byte_header_then_its_payload() -> None:
    data = frames.frame(frames.DATA, frames.END_STREAM, 5, b"abc")
    assert data == b"\x00\x00\x03" + b"\x00\x01" + b"\x00\x00\x00\x05" + b"abc"
    away = frames.goaway(7, frames.PROTOCOL_ERROR, "why")
    assert away[3] == frames.GOAWAY
    assert away[9:] == b"\x00\x00\x00\x07\x00\x00\x00\x01why"


def test_padding_is_removed_and_padding_too_long_is_a_protocol_error() -> None:
    assert frames.unpadded(frames.PADDED, b"\x02abc\x00\x00") == b"abc"
    with pytest.raises(frames.ProtocolViolation) as caught:
        frames.unpadded(frames.PADDED, b"\x05ab")
    assert caught.value.code == frames.PROTOCOL_ERROR


def test_a_block_decodes_the_same_from_memory_as_afresh() -> None:
    encoder = hpack.Encoder()
    headers = [(":path", "/inference.GRPCInferenceService/ModelInfer"), ("x-api-key", "k")]
    decoder = frames.HeaderDecoder()
    assert decoder.decode(encoder.encode(headers)) == headers  # adds to the table
    again = encoder.encode(headers)  # now all indexed: leaves the table as it is
    first = decoder.decode(again)
    assert first == headers
    assert decoder.decode(again) is first  # remembered


def test_a_remembered_block_is_forgotten_once_the_table_changes() -> None:
    encoder = hpack.Encoder()
    decoder = frames.HeaderDecoder()
    decoder.decode(encoder.encode([("x-a", "1")]))
    newest = encoder.encode([("x-a", "1")])  # "dynamic entry 1", now x-a: 1
    assert decoder.decode(newest) == [("x-a", "1")]
    decoder.decode(encoder.encode([("x-b", "2")]))  # x-b: 2 becomes dynamic entry 1
    assert decoder.decode(newest) == [("x-b", "2")]


def test_a_table_size_update_alone_forgets_remembered_blocks() -> None:
    encoder = hpack.Encoder()
    decoder = frames.HeaderDecoder()
    decoder.decode(encoder.encode([("x-a", "1")]))
    indexed = encoder.encode([("x-a", "1")])
    assert decoder.decode(indexed) == [("x-a", "1")]
    encoder.header_table_size = 0  # the next block starts with a size update that empties it
    decoder.decode(encoder.encode([(":method", "POST")]))
    with pytest.raises(hpack.HPACKError):
        decoder.decode(indexed)  # its entry is gone: no longer valid HPACK
