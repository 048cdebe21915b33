"""The pipelining SMTP client's pure parts: reply parsing over arbitrary read boundaries,
enhanced codes, DATA content framing (dot-stuffing, line ends). No sockets here; the
real-socket tests are tests/integration/test_engine_pipeline.py."""

from __future__ import annotations

import asyncio
import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.delivery.pipeline import Reply, _Protocol, parse_enhanced, wire_data


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.aborted


def _feed(chunks: list[bytes]) -> _Protocol:
    loop = asyncio.new_event_loop()
    try:
        p = _Protocol(loop)
        p.connection_made(_Transport())
        for c in chunks:
            p.data_received(c)
        return p
    finally:
        loop.close()


STREAM = (b"220 mx.example ESMTP\r\n"
          b"250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
          b"250 2.1.0 Ok\r\n"
          b"450 4.2.1 mailbox busy\r\n"
          b"550-5.1.1 no such user\r\n550 5.1.1 see https://example.test/why\r\n"
          b"354 End data with <CR><LF>.<CR><LF>\n"  # a bare LF ending is accepted too
          b"421 4.7.0 closing\r\n")
EXPECTED = [
    Reply(220, "", "mx.example ESMTP"),
    Reply(250, "", "mx.example\nPIPELINING\n8BITMIME"),
    Reply(250, "2.1.0", "2.1.0 Ok"),
    Reply(450, "4.2.1", "4.2.1 mailbox busy"),
    Reply(550, "5.1.1", "5.1.1 no such user\n5.1.1 see https://example.test/why"),
    Reply(354, "", "End data with <CR><LF>.<CR><LF>"),
    Reply(421, "4.7.0", "4.7.0 closing"),
]


def test_all_replies_in_one_read() -> None:
    p = _feed([STREAM])
    assert list(p.replies) == EXPECTED
    assert p.error is None and p.buf == b""


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=30))
def test_any_split_of_the_stream_gives_the_same_replies(cuts: list[int]) -> None:
    points = [0, *sorted(set(cuts)), len(STREAM)]
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    p = _feed(chunks)
    assert list(p.replies) == EXPECTED


def test_byte_by_byte() -> None:
    p = _feed([STREAM[i:i + 1] for i in range(len(STREAM))])
    assert list(p.replies) == EXPECTED


def test_malformed_line_fails_the_connection() -> None:
    p = _feed([b"250 Ok\r\n", b"hello there\r\n"])
    assert p.error is not None and "malformed" in p.error.text
    assert p.transport is not None and p.transport.is_closing()
    assert list(p.replies) == [Reply(250, "", "Ok")]


def test_multiline_reply_that_changes_code_fails() -> None:
    p = _feed([b"250-first\r\n", b"550 second\r\n"])
    assert p.error is not None and not p.replies


def test_unbounded_line_fails() -> None:
    p = _feed([b"250 " + b"x" * 70_000])
    assert p.error is not None and "too long" in p.error.text


def test_enhanced_code() -> None:
    assert parse_enhanced("4.7.28 Our system has detected") == "4.7.28"
    assert parse_enhanced("5.1.1") == "5.1.1"
    assert parse_enhanced("2.0.0Ok") == ""
    assert parse_enhanced("Ok 2.0.0") == ""
    assert parse_enhanced("3.0.0 not a class") == ""


def _unstuff(wire: bytes) -> bytes:
    """What a receiver stores: drop the final '.' line and one leading dot of each line."""
    assert wire.endswith(b"\r\n.\r\n")
    lines = wire[:-3].split(b"\r\n")[:-1]
    return b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


line = st.text(alphabet=st.sampled_from(list(".a \t\r\nZ.")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(line, max_size=12))
def test_wire_data_round_trips_and_never_ends_early(parts: list[str]) -> None:
    message = "\r\n".join(parts).encode()
    wire = wire_data(message)
    # no line inside the content is a lone '.', so the server cannot end the DATA early
    assert b"." not in wire[:-3].split(b"\r\n")
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", wire), "only CRLF line ends go out"
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert _unstuff(wire) == normalised


def test_wire_data_examples() -> None:
    assert wire_data(b".hidden\r\nx\r\n.\r\n") == b"..hidden\r\nx\r\n..\r\n.\r\n"
    assert wire_data(b"a\nb") == b"a\r\nb\r\n.\r\n"
    assert wire_data(b"a\r\nb\r\n") == b"a\r\nb\r\n.\r\n"
