"""Differential tests of the HTTP/1.1 front's framing (``entrypoints.http11`` under uvicorn)
against a strict reference: h11's parser, with RFC 9112's rules it leaves to the app.

Request smuggling needs two parsers that disagree on where a request ends: a proxy in front
(nginx, HAProxy, a CDN) and this server. Each odd request below (conflicting lengths,
Transfer-Encoding variants, odd chunk sizes and extensions, folded, bare-LF, NUL-bearing
lines, pipelining, ...) goes over a raw socket to a served app that records every request it
gets and its body; h11 reads the same bytes. The server may be stricter than h11 (refuse what
it takes, or answer fewer of a connection's requests), never looser: every request it saw is
one h11 saw, in the same place with the same body, and where h11 finds the bytes malformed
the server answered with a 4xx/5xx before reaching them.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h11
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.servers import serve

# A request seen: its method, its target (origin form) and its whole body.
_Seen = tuple[bytes, bytes, bytes]


@dataclass
class _Recorder:
    seen: list[_Seen]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        # The app's own rule (the Host check every route sits behind), which h11 applies in
        # its parser: an HTTP/1.1 request without exactly one Host is refused, unread.
        hosts = [value for name, value in scope["headers"] if name == b"host"]
        ok = scope["http_version"] != "1.1" or len(hosts) == 1
        if ok:
            self.seen.append((scope["method"].encode("ascii"), scope["raw_path"], body))
        await send(
            {
                "type": "http.response.start",
                "status": 200 if ok else 400,
                "headers": [(b"content-length", b"0")]
                + ([] if ok else [(b"connection", b"close")]),
            }
        )
        await send({"type": "http.response.body", "body": b""})


@dataclass
class _Live:
    url: str
    recorder: _Recorder


@pytest.fixture(scope="module")
def live() -> Iterator[_Live]:
    recorder = _Recorder([])
    with serve(recorder) as url:
        yield _Live(url, recorder)


def _served(live: _Live, raw: bytes) -> tuple[list[_Seen], list[int]]:
    """The requests the app got from ``raw`` (sent on one connection, then the client's side
    shut down), and the final statuses of the server's answers."""
    live.recorder.seen.clear()
    host, port = live.url.removeprefix("http://").split(":")
    answer = b""
    with socket.create_connection((host, int(port)), timeout=60) as conn:
        with contextlib.suppress(OSError):  # refused mid-send: the answer is still read
            conn.sendall(raw)
            conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                answer += chunk
    statuses = [int(status) for status in re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer)]
    # The server closes the connection after the client's last request: all seen by then.
    return list(live.recorder.seen), [status for status in statuses if status >= 200]


def _reference(raw: bytes) -> tuple[list[_Seen], str]:
    """The requests h11 reads from ``raw`` (each answered 200, as the app does), and what
    the bytes are to it: "whole" (requests that all ended), "cut" (the start of one more: the
    server may wait for the rest, then close at the client's end without a word) or
    "malformed"."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    conn.receive_data(raw)
    seen: list[_Seen] = []
    current: list[bytes] = []
    upgrade = False
    try:
        while True:
            if conn.their_state is h11.IDLE:
                # RFC 9112 2.2: a server SHOULD ignore empty lines before a request line (h11
                # refuses them; uvicorn and nginx skip any CR and LF there).
                buffer = conn._receive_buffer._data  # (h11 has no other way)
                del buffer[: len(buffer) - len(buffer.lstrip(b"\r\n"))]
            event = conn.next_event()
            if isinstance(event, h11.Request):
                current = [event.method, event.target, b""]
                # An upgrade the server does not make: its request is answered, its connection
                # closed (``entrypoints.http11``), where h11 reads on.
                upgrade = any(name == b"upgrade" for name, _ in event.headers)
            elif isinstance(event, h11.Data):
                current[2] += event.data
            elif isinstance(event, h11.EndOfMessage):
                seen.append((current[0], current[1], current[2]))
                current = []
                # (A CONNECT answered 2xx would switch protocols: the app has no proxy.)
                status = 405 if seen[-1][0] == b"CONNECT" else 200
                conn.send(h11.Response(status_code=status, headers=[(b"content-length", b"0")]))
                conn.send(h11.EndOfMessage())
                if upgrade or conn.their_state is not h11.DONE or conn.our_state is not h11.DONE:
                    return seen, "whole"  # (MUST_CLOSE: what follows is not read)
                conn.start_next_cycle()
            elif event is h11.NEED_DATA and not current and not conn._receive_buffer:
                return seen, "whole"
            else:  # NEED_DATA within a request, PAUSED (an upgrade)
                return seen, "cut" if event is h11.NEED_DATA else "whole"
    except h11.RemoteProtocolError:
        return seen, "malformed"


def _disagreement(live: _Live, raw: bytes, *, read_as: bytes | None = None) -> str | None:
    """Why the server's reading of ``raw`` is looser than h11's (of ``read_as``, given), or
    ``None``."""
    seen, statuses = _served(live, raw)
    expected, reading = _reference(raw if read_as is None else read_as)

    def same(ours: _Seen, theirs: _Seen) -> bool:
        # An absolute-form target reaches the app as its path (its host checked).
        target = re.sub(rb"^https?://[^/]*", b"", theirs[1])
        return ours == (theirs[0], target, theirs[2])

    if len(seen) > len(expected) or not all(map(same, seen, expected)):
        return f"the app got {seen}, h11 reads {expected}"
    refused = bool(statuses) and statuses[-1] >= 400
    if reading == "malformed" and not refused:
        return f"h11 finds it malformed (after {expected}); answers {statuses}, app got {seen}"
    if len(seen) < len(expected) and not refused and len(statuses) != len(seen):
        return f"fewer requests than h11 ({seen} of {expected}) with answers {statuses}"
    return None


_HOST = b"Host: 127.0.0.1\r\n"
# What follows each case's body on its connection: a request of its own to both parsers
# when the body was framed alike, part of the body or garbage otherwise.
_NEXT = b"GET /next HTTP/1.1\r\n" + _HOST + b"\r\n"
_CHUNKS = b"3\r\nabc\r\n0\r\n\r\n"
# A request hidden in a body: smuggled if the app ever gets /smuggled.
_HIDDEN = b"GET /smuggled HTTP/1.1\r\n" + _HOST + b"\r\n"


def _post(fields: bytes, body: bytes, *, start: bytes = b"POST / HTTP/1.1\r\n") -> bytes:
    return start + _HOST + fields + b"\r\n" + body + _NEXT


def _cases() -> Iterator[tuple[str, bytes]]:
    te = b"Transfer-Encoding: %s\r\n"
    for coding in (
        b"chunked",
        b"Chunked",
        b"CHUNKED",
        b" chunked",
        b"chunked ",
        b"\tchunked",
        b"chunked\x0b",
        b"\x0bchunked",
        b"chunked\x00",
        b"chunked, chunked",
        b"chunked,",
        b",chunked",
        b", chunked",
        b" , chunked",
        b"chunked,,",
        b"identity",
        b"identity, chunked",
        b"chunked, identity",
        b"gzip, chunked",
        b"chunked;q=1",
        b'"chunked"',
        b"chunk",
        b"chunkedx",
        b"xchunked",
        b"",
    ):
        yield f"Transfer-Encoding: {coding!r}", _post(te % coding, _CHUNKS)
    chunked = te % b"chunked"
    yield "two Transfer-Encoding fields", _post(chunked + chunked, _CHUNKS)
    yield "chunked then identity fields", _post(chunked + te % b"identity", _CHUNKS)
    yield "transfer-encoding lowercase", _post(b"transfer-encoding: chunked\r\n", _CHUNKS)
    yield "Transfer-Encoding with no space", _post(b"Transfer-Encoding:chunked\r\n", _CHUNKS)
    yield "space before the colon", _post(b"Transfer-Encoding : chunked\r\n", _CHUNKS)
    yield "tab before the colon", _post(b"Transfer-Encoding\t: chunked\r\n", _CHUNKS)
    yield "obs-fold value", _post(b"Transfer-Encoding:\r\n chunked\r\n", _CHUNKS)
    yield "obs-fold into the name", _post(b"X-A: b\r\n Transfer-Encoding: chunked\r\n", _CHUNKS)
    yield "obs-fold of another field", _post(b"X-A: b\r\n\tc\r\n", b"")
    yield "a field folded before the first", b"GET / HTTP/1.1\r\n X-A: b\r\n" + _HOST + b"\r\n"
    length = b"Content-Length: %s\r\n"
    hidden = b"%d" % len(_HIDDEN)
    yield "CL and TE", _post(length % hidden + chunked, b"0\r\n\r\n" + _HIDDEN)
    yield "TE and CL", _post(chunked + length % hidden, b"0\r\n\r\n" + _HIDDEN)
    yield "CL 0 and TE", _post(length % b"0" + chunked, _CHUNKS)
    for value in (
        b"3",
        b"03",
        b"+3",
        b"-3",
        b" 3",
        b"3 ",
        b"\t3",
        b"3\x0b",
        b"3,3",
        b"3, 3",
        b"3,4",
        b"0x3",
        b"3.0",
        b"3e0",
        b"",
        b"3a",
        b"99999999999999999999999",
        b"18446744073709551619",
    ):
        yield f"Content-Length: {value!r}", _post(length % value, b"abc")
    yield "two Content-Lengths, same", _post(length % b"3" + length % b"3", b"abc")
    yield "two Content-Lengths, 0 and more", _post(length % b"0" + length % hidden, _HIDDEN)
    yield "two Content-Lengths, more and 0", _post(length % hidden + length % b"0", _HIDDEN)
    yield "content-length lowercase", _post(b"content-length: 3\r\n", b"abc")
    yield "Content-Length folded", _post(b"Content-Length:\r\n 3\r\n", b"abc")
    yield "Content-Length space colon", _post(b"Content-Length : 3\r\n", b"abc")
    yield from _chunk_cases()
    yield from _line_cases()


def _chunk_cases() -> Iterator[tuple[str, bytes]]:
    chunked = b"Transfer-Encoding: chunked\r\n"
    for size in (
        b"3",
        b"03",
        b"0003",
        b"+3",
        b"-3",
        b"0x3",
        b" 3",
        b"3 ",
        b"3\t",
        b"3;ext",
        b"3;ext=val",
        b'3;ext="quoted"',
        b'3;ext="a;b"',
        b'3;ext="a\\"b"',
        b'3;ext="a\r\nb"',
        b"3;ext=\x00",
        b"3;ext=\x01",
        b"3;ext=\xff",
        b"3 ;ext",
        b"3; ext",
        b"3;",
        b"3;a=b;c=d",
        b"ffffffffffffffffff3",
        b"10000000000000003",
        b"3\x00",
        b"3\x0b",
        b"g",
        b"",
    ):
        yield f"chunk size {size!r}", _post(chunked, size + b"\r\nabc\r\n0\r\n\r\n")
    for last in (b"0;x=y", b"00", b"000", b"0 ", b'0;x="q"', b"0x0", b"-0", b"+0"):
        yield f"last chunk {last!r}", _post(chunked, b"3\r\nabc\r\n" + last + b"\r\n\r\n")
    yield "chunk longer than its size", _post(chunked, b"3\r\nabcd\r\n0\r\n\r\n")
    yield "chunk without its CRLF", _post(chunked, b"3\r\nabcXX0\r\n\r\n")
    yield "chunks with bare LF", _post(chunked, b"3\nabc\n0\n\n")
    yield "chunks with bare CR", _post(chunked, b"3\rabc\r0\r\r")
    yield (
        "chunk hiding a request",
        _post(chunked, b"%x\r\n" % len(_HIDDEN) + _HIDDEN + b"\r\n0\r\n\r\n"),
    )
    trailer = b"3\r\nabc\r\n0\r\n%s\r\n"
    yield "a trailer", _post(chunked, trailer % b"X-T: 1\r\n")
    yield "a Content-Length trailer", _post(chunked, trailer % b"Content-Length: 50\r\n")
    yield "a Transfer-Encoding trailer", _post(chunked, trailer % b"Transfer-Encoding: gzip\r\n")
    yield "a trailer without a colon", _post(chunked, trailer % b"X-T 1\r\n")
    yield "a folded trailer", _post(chunked, trailer % b"X-T: 1\r\n 2\r\n")
    yield "a trailer ending in a bare LF", _post(chunked, trailer % b"X-T: 1\n")
    yield "a trailer with NUL", _post(chunked, trailer % b"X-T: a\x00b\r\n")


def _line_cases() -> Iterator[tuple[str, bytes]]:
    chunked = b"Transfer-Encoding: chunked\r\n"
    length = b"Content-Length: %s\r\n"
    get = b"GET / HTTP/1.1\r\n"
    yield "bare LF lines", b"GET / HTTP/1.1\n" + _HOST.replace(b"\r", b"") + b"\n" + _NEXT
    yield "one bare LF line", get + b"Host: 127.0.0.1\nX-A: b\r\n\r\n" + _NEXT
    yield "bare CR lines", b"GET / HTTP/1.1\rHost: 127.0.0.1\r\r" + _NEXT
    for field in (
        b"X-A: a\rb",
        b"X-A: a\nb",
        b"X-A: a\x00b",
        b"X-\x00A: b",
        b"X-A: a\x01b",
        b"X-A: a\x7fb",
        b"X-A: \xff",
        b"X A: b",
        b"X-A : b",
        b": b",
        b"X-A",
        b"X-A:b",
        b"X\x80A: b",
        b"X-A: " + b"a" * 70_000,
    ):
        yield f"field {field[:24]!r}", get + _HOST + field + b"\r\n\r\n" + _NEXT
    yield "Expect: 100-continue", _post(b"Expect: 100-continue\r\n" + length % b"3", b"abc")
    yield "Expect: 100-continue, chunked", _post(b"Expect: 100-continue\r\n" + chunked, _CHUNKS)
    yield "Expect: odd", _post(b"Expect: 100-continuex\r\n" + length % b"3", b"abc")
    yield "absolute form", b"GET http://127.0.0.1/x HTTP/1.1\r\n" + _HOST + b"\r\n" + _NEXT
    yield "absolute form, another host", b"GET http://evil.example/x HTTP/1.1\r\n" + _HOST + b"\r\n"
    yield "two Hosts", get + _HOST + b"Host: evil.example\r\n\r\n" + _NEXT
    yield "no Host", get + b"\r\n" + _NEXT
    yield "leading empty lines", b"\r\n\r\n" + _NEXT
    yield "pipelined", _NEXT * 3
    yield "pipelined with bodies", _post(length % b"3", b"abc" + _post(chunked, _CHUNKS))
    yield "Connection: close, then more", get + _HOST + b"Connection: close\r\n\r\n" + _NEXT
    http10 = b"POST / HTTP/1.0\r\nConnection: keep-alive\r\n"
    yield "HTTP/1.0 keep-alive", b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + _NEXT
    yield "HTTP/1.0 with a length", http10 + length % b"3" + b"\r\nabc" + _NEXT
    yield "HTTP/1.0 without a length", http10 + b"\r\nabc" + _NEXT
    yield "HTTP/1.0 chunked", http10 + chunked + b"\r\n" + _CHUNKS + _NEXT
    yield "POST without a length", b"POST / HTTP/1.1\r\n" + _HOST + b"\r\n" + _NEXT
    yield "GET with a body", get + _HOST + length % b"3" + b"\r\nabc" + _NEXT
    yield "HEAD", b"HEAD / HTTP/1.1\r\n" + _HOST + b"\r\n" + _NEXT
    yield "CONNECT", b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n" + _NEXT
    yield "upgrade not made", get + _HOST + b"Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + _NEXT
    for line in (
        b"get / HTTP/1.1",
        b"GET / http/1.1",
        b"GET  / HTTP/1.1",
        b"GET /  HTTP/1.1",
        b"GET\t/ HTTP/1.1",
        b"GET /a b HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b" GET / HTTP/1.1",
        b"GET / HTTP/01.1",
        b"GET / HTTP/1.10",
        b"G\x00ET / HTTP/1.1",
        b"GET /\x00 HTTP/1.1",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1",
    ):
        yield f"request line {line[:24]!r}", line + b"\r\n" + _HOST + b"\r\n" + _NEXT


_CASES = dict(_cases())
# Known and left: httptools (llhttp, lenient) takes a request line whose parts two spaces
# part (RFC 9112 3 allows it: "MAY parse on whitespace-delimited word boundaries"), h11 does
# not; the protocol never sees the line's bytes to refuse. Its framing must be the one h11
# gives the line with single spaces.
_LENIENT = {
    "request line b'GET  / HTTP/1.1'": b"GET / HTTP/1.1",
    "request line b'GET /  HTTP/1.1'": b"GET / HTTP/1.1",
}


@pytest.mark.parametrize("raw", [pytest.param(raw, id=name) for name, raw in _CASES.items()])
def test_the_server_never_frames_a_request_looser_than_h11(
    live: _Live, raw: bytes, request: pytest.FixtureRequest
) -> None:
    name = request.node.callspec.id
    read_as = None
    if name in _LENIENT:  # the same bytes but the request line's, single-spaced
        line, _, rest = raw.partition(b"\r\n")
        assert line != _LENIENT[name]
        read_as = _LENIENT[name] + b"\r\n" + rest
    assert _disagreement(live, raw, read_as=read_as) is None


# Pieces of request heads and chunked bodies a proxy and a server might read apart.
_TOKENS = [b"chunked", b"Chunked", b"identity", b"gzip", b",", b" ", b"\t", b";", b'"', b"\x0b"]
_SIZES = [b"0", b"3", b"a", b"F", b"x", b"+", b"-", b" ", b"\t", b";", b"=", b'"', b"\r", b"\n"]
_LENGTHS = [b"0", b"3", b"4", b"+", b"-", b",", b" ", b"\t", b"x", b"e"]


@given(
    codings=st.lists(st.lists(st.sampled_from(_TOKENS), max_size=5).map(b"".join), max_size=2),
    lengths=st.lists(st.lists(st.sampled_from(_LENGTHS), max_size=4).map(b"".join), max_size=2),
    size=st.lists(st.sampled_from(_SIZES), min_size=1, max_size=6).map(b"".join),
    data=st.binary(max_size=6),
)
def test_generated_framings_are_never_read_looser_than_h11(
    live: _Live, codings: list[bytes], lengths: list[bytes], size: bytes, data: bytes
) -> None:
    """Transfer-Encoding and Content-Length fields (any number, odd values) and a chunk of
    an odd size line: however the head frames the body, the server reads it as h11 does, or
    refuses it."""
    fields = b"".join(b"Transfer-Encoding: %s\r\n" % coding for coding in codings)
    fields += b"".join(b"Content-Length: %s\r\n" % length for length in lengths)
    body = size + b"\r\n" + data + b"\r\n0\r\n\r\n"
    assert _disagreement(live, _post(fields, body)) is None
