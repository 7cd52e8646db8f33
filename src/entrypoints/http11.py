"""uvicorn's httptools protocol (``HTTP_PARSER``) with the two limits h11 kept and it does not:

- A request's head (request line and header fields) is bounded: uvicorn's httptools code
  keeps every byte of a head until its blank line, with no limit (a client sending headers
  for ever held the memory it sent), where h11 refused one past 16 KiB with a 400. Here a
  head longer than ``MAX_HEAD_BYTES`` gets the same 400 and the connection is closed.
- Trailer fields (after a chunked body) are dropped, as h11 drops them: uvicorn appended them
  to the scope's headers, the list the app had already read, so a trailer could add a second
  ``Host`` (or any header) after the Host check had passed the request. Their section is
  bounded as a head is: httptools keeps a field's bytes until it ends, joined piece by piece.
- A request's head has a time limit (``head_timeout_seconds``, the setting
  ``TASKFLOW_LINK_REQUEST_HEAD_TIMEOUT_SECONDS``), from the connection's start or the end of
  the answer before: uvicorn's keep-alive timeout starts only after an answer and any byte
  ends it, so a connection that sent nothing, or part of a head, was held for ever (h11's
  protocol too). Past it the connection is closed: with a 408 when part of a head came (the
  client waits for an answer: Apache and Node answer so), without a word when nothing did
  (an idle connection: nginx and uvicorn's keep-alive close it so, and a 408 nobody asked
  for could be read as the answer to a request the client sends just then).
- An absolute-form target (``GET http://host/path``) is taken only when it names the
  request's one Host (RFC 9112 3.2.2: the target's authority is the request's, Host is
  ignored): httptools gave the app the target's path alone, so the app served it as that
  path of the Host, where a proxy in front may have routed or cached it by the target's.
  One naming another host or port, a user, or a scheme other than http(s) gets a 400; one
  with an empty path (``GET http://host``) is the path "/" (uvicorn answered 400).
- A request's body has a time limit between two reads of it (``body_timeout_seconds``, the
  setting ``TASKFLOW_LINK_REQUEST_BODY_TIMEOUT_SECONDS``: nginx's ``client_body_timeout``):
  uvicorn waited for a body for ever, so a head with ``Content-Length: 100000`` and then
  nothing held the connection and its app's task (waiting on ``receive()``). Past it the app
  is told ``http.disconnect`` and the connection closed, with a 408 when no answer began.
  Not the client's time: while the server holds the body back (its app not reading it yet,
  or not yet asked for it with ``100 Continue``).
- A client that shuts down its side after its request(s) (``shutdown(SHUT_WR)``: it has no
  more to send) gets its answers, as from nginx, and the connection is closed after the last:
  uvicorn closed it at the end of what came, and an answer not yet written was never sent.
- A request asking for an upgrade the server does not make (any but a WebSocket's) with a
  body gets a 400: httptools takes such a request as bodyless and parsed its body, in a read
  of its own, as the next request (smuggled past a proxy that passes Upgrade on). One
  without a body is answered and its connection closed.
- A request in an HTTP version other than 1.x gets a 505: httptools parses an HTTP/0.9
  request line (no version) and an HTTP/2.0 one, which uvicorn answered in HTTP/1.1 (and it
  refused the rest with a 400). One in HTTP/1.x past 1.1 (HTTP/1.2) is served as HTTP/1.1,
  the highest minor version of 1 the server implements (RFC 9112 2.3): httptools refused it.
- A request refused (a parser error, a 505, a 501) pipelined behind answers still to give
  gets its refusal after them, the connection closed then: uvicorn wrote it at once and
  closed, cutting short the answer being written and dropping the requests queued.
- A transfer coding other than chunked (``gzip, chunked``) gets a 501 (RFC 9112 6.1, as from
  nginx): httptools read such a body as chunked and its app got it still gzipped.
  A Transfer-Encoding with an empty list element (``,chunked``) gets a 400, as from h11 and
  nginx: httptools read its body as chunked, where a proxy that does not recognise the value
  (nginx compares it with "chunked" whole) reads no body and takes the chunks for requests.
- A field's value reaches the app without the whitespace around it (RFC 9112 5, as h11
  gave it): httptools kept a trailing one, so ``Host: 127.0.0.1 `` was refused as no host.
- With WebSockets off (``serve``'s app has none: uvicorn's ``ws="none"``), an upgrade to
  one is an upgrade not made, as above, and logged without uvicorn's advice to install a
  WebSocket library.
- A WebSocket upgrade pipelined behind a request still being answered is not made (answered
  as an upgrade not made, then closed): uvicorn made it at once, its 101 before the earlier
  answer, and the timers of the old protocol later closed the WebSocket's connection.
- An answer begun before its request's body was asked for (``100 Continue``) while the client
  waits to send it (``Expect: 100-continue``, none of the body come: a 401 or 404 from the head
  alone, a 413 from its Content-Length) closes the connection (``Connection: close``): the
  client may skip the body or send it still (RFC 9110 10.1.1), so what came next could not be
  told apart, and uvicorn read on, the client's next request taken as the body (or waited for
  until the body timeout).

Imported only to serve (it needs httptools, a dependency: ``http_parser_problem`` says when
it is missing)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, cast

from httptools import HttpParserCallbackError, HttpParserInvalidURLError, parse_url
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# Far above any head a browser or client of ours sends (cookies included), and what one
# connection can make the process hold before its 400, plus the read that crossed it.
MAX_HEAD_BYTES = 64 * 1024
# The default of TASKFLOW_LINK_REQUEST_HEAD_TIMEOUT_SECONDS (the servers without settings,
# the emulator's): a client's whole head in this long, however slow its network.
HEAD_TIMEOUT_SECONDS = 30.0
# The default of TASKFLOW_LINK_REQUEST_BODY_TIMEOUT_SECONDS: nginx's client_body_timeout.
BODY_TIMEOUT_SECONDS = 60.0


def with_timeouts(
    head_seconds: float, body_seconds: float = BODY_TIMEOUT_SECONDS
) -> type[asyncio.Protocol]:
    """``BoundedHttpToolsProtocol`` with ``head_seconds`` for a head and ``body_seconds``
    between two reads of a body, as uvicorn's ``http`` takes it: uvicorn only calls it (a
    class is what its types name), and it pickles, for ``--workers`` (uvicorn hands its
    configuration to each worker so)."""
    return cast(
        "type[asyncio.Protocol]",
        functools.partial(
            BoundedHttpToolsProtocol,
            head_timeout_seconds=head_seconds,
            body_timeout_seconds=body_seconds,
        ),
    )


class _BodyFlow(FlowControl):
    """uvicorn's flow control, telling its protocol each time the app asks for more of a body
    (``receive()`` lets reading go on, after its ``100 Continue`` if the client waits for
    one): the client's time for its next bytes starts again then."""

    def __init__(self, transport: asyncio.Transport, wanted: Callable[[], None]) -> None:
        super().__init__(transport)
        self._wanted = wanted

    def resume_reading(self) -> None:
        self._wanted()
        super().resume_reading()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a bounded request head, in size and in time, a body bounded
    in time between two reads, and no trailer fields."""

    _in_head = True  # a connection starts with a request's head: its fields are the request's
    _in_fields = True  # in a head or a chunked body's trailer section: bytes counted
    _head_bytes = 0  # those bytes, since the head (or the last chunk's size line) began
    _body_bytes = 0  # body bytes in the read being parsed
    _chunked_read = False  # a chunk's size line ended in the read being parsed
    _trailer_bytes = 0  # the trailer fields that ended, since the last chunk's size line
    _head_begun = False  # a byte of the awaited head has come
    _in_body = False  # a request's head is whole, its body (or trailer section) not yet
    _head_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_heard = 0.0  # the loop's time a body's bytes last came (or were last asked for)
    _eof = False  # the client sent all it will (it shut down its side): answer, then close
    _refusal: tuple[int, str] | None = None  # the status a parser error is answered with
    _refused: tuple[int, str] | None = None  # one waiting for the answers before it to end
    _message_cycle: Any = None  # the cycle of the request whose body is being read, if any

    def __init__(
        self,
        *args: Any,
        head_timeout_seconds: float = HEAD_TIMEOUT_SECONDS,
        body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # Any one-digit version is parsed (llhttp refused all but 0.9, 1.0, 1.1 and 2.0 with
        # its 400): an HTTP/1.x past 1.1 is served as 1.1 (RFC 9112 2.3), the others get 505.
        self.parser.set_dangerous_leniencies(lenient_version=True)
        self.head_timeout_seconds = head_timeout_seconds
        self.body_timeout_seconds = body_timeout_seconds

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = _BodyFlow(transport, self._body_wanted)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        self._body_done()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol's
        """The end of what the client sends: its whole requests are still answered (the
        connection closed after the last), where uvicorn closed it at once, dropping them.
        One cut short (a head or a body unfinished, its app told ``http.disconnect``), or none
        under way: closed now. Over TLS (uvicorn's own ``ssl``) the connection is closed
        whatever this returns (asyncio's TLS transport cannot stay half open), and a true value
        only adds asyncio's warning, which a client could cause once per connection: ``None``
        there."""
        answering = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if self._in_body or not answering:
            return None
        self._eof = True
        self._head_arrived()  # no head comes any more
        if self.transport.get_extra_info("sslcontext") is not None:
            return None
        return True

    def _await_head(self) -> None:
        """Start the head's time: nothing of the connection's is under way (no request being
        read or answered), the next head is awaited."""
        self._head_arrived()
        if not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._head_late)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._head_begun:
            msg = "Request head not received in time."
            self.logger.info(msg)
            self._send_error(408, msg)
        self.transport.close()

    def _refuse(self, status: int, msg: str) -> HttpParserCallbackError:
        """The error that stops the parser, answered with ``status`` (not uvicorn's 400)."""
        self._refusal = (status, msg)
        return HttpParserCallbackError(msg)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error: a 400, or the status ``_refuse`` gave. Behind
        answers still to give (the refused request pipelined), after them, as the last: uvicorn
        wrote it at once and closed, cutting short the answer being written and dropping the
        ones queued. In the body of the request being answered, once its answer began: the
        connection closed without it (it would be read as part of that answer)."""
        status = 400
        if self._refusal is not None:
            status, msg = self._refusal
            self._refusal = None
            self.logger.warning(msg)
        if self.transport.is_closing():
            return
        refused, cycle = self._message_cycle, self.cycle
        self._message_cycle = None
        self._in_body = False  # no more of it is read
        self._body_done()
        # Answers to give first: the requests queued, and the one being answered (the one
        # before a refused request queued itself: none is queued behind one under way).
        earlier = bool(self.pipeline) or (cycle is not refused and not cycle.response_complete)
        if refused is not None and self.pipeline and self.pipeline[0][0] is refused:
            self.pipeline.popleft()  # queued, its app not started: never answered
        elif refused is not None and refused.response_started:
            self.transport.close()  # (its app is told http.disconnect)
            return
        if earlier:
            self._refused = (status, msg)
            self.flow.pause_reading()  # what came after it is never read
            return
        self._send_error(status, msg)
        self.transport.close()

    def _send_error(self, status: int, msg: str) -> None:
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(msg)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                msg.encode("ascii"),
            ]
        )
        self.transport.write(b"".join(content))

    def _await_body(self) -> None:
        """A body's bytes came (or the app asked for more): the client's time for the next
        starts now. One timer a body, not one a read: it looks again when it fires."""
        self._body_heard = self.loop.time()
        if self._body_timer is None and not self.transport.is_closing():
            self._body_timer = self.loop.call_at(
                self._body_heard + self.body_timeout_seconds, self._body_check
            )

    def _body_wanted(self) -> None:
        if self._in_body:
            self._await_body()

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_check(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._in_body:
            return
        now, cycle = self.loop.time(), self.cycle
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The server holds the body back (its app has not read what came, a request
            # pipelined waits for the one before, or no 100 Continue went yet): not the
            # client's time.
            self._body_heard = now
        if now - self._body_heard < self.body_timeout_seconds:
            self._body_timer = self.loop.call_at(
                self._body_heard + self.body_timeout_seconds, self._body_check
            )
            return
        msg = "Request body not received in time."
        self.logger.info(msg)
        # Its app, waiting on receive(), is told http.disconnect; what it sends is dropped.
        # The 408 only when no answer began: neither its own, nor (it waits, pipelined) the
        # one before's, which the 408 would cut into.
        unanswered = not cycle.response_started and not self.pipeline
        cycle.disconnected = True
        cycle.message_event.set()
        if unanswered:
            self._send_error(408, msg)
        self.transport.close()

    def on_response_complete(self) -> None:
        answered_all = not self.pipeline
        super().on_response_complete()
        if self._refused is not None:  # a request refused behind this answer
            if answered_all and not self.transport.is_closing():
                self._send_error(*self._refused)
                self.transport.close()
            elif not answered_all:
                self.flow.pause_reading()  # (resumed for the next answer's request)
            return
        if self._eof:
            if answered_all and not self.transport.is_closing():
                self.transport.close()
            return
        # The next head's time starts now, unless it came whole already (pipelined: its
        # request, the last read, is answered next) or the body of the one answered is still
        # coming (its end starts it).
        if self.cycle.response_complete and not self._in_body:
            self._await_head()

    def data_received(self, data: bytes) -> None:
        if self._refused is not None:
            return  # after a request refused: dropped (its parser stopped there)
        self._body_bytes = 0
        self._chunked_read = False
        super().data_received(data)
        if self._in_body:
            self._await_body()
        if not self._in_fields:
            self._head_bytes = 0
            return
        if self._chunked_read:
            # The fields began at a chunk's size line within this read: the bytes before it
            # (other chunks' size lines, as many as the read holds: 20,000 one-byte chunks are
            # 100 KB) are not theirs. What they are: the trailer fields that ended (each
            # counted, and bounded, whole as it ends) and the one going on (within this
            # read: the next counts whole).
            self._head_bytes = self._trailer_bytes
        else:
            # Every byte of this read that was not body: the fields being read, plus whatever
            # came before them in the read (a request's head, pipelined, counts twice at most).
            self._head_bytes += len(data) - self._body_bytes
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            msg = "Request head too large."
            self.logger.warning(msg)
            self.send_400_response(msg)

    def on_message_begin(self) -> None:
        self._message_cycle = None
        self._in_head = self._in_fields = self._head_begun = True
        self._head_bytes = self._trailer_bytes = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            # RFC 9112 5: the whitespace around a field's value is not part of it; httptools
            # drops the leading one only (``Host: 127.0.0.1 `` reached the app so).
            super().on_header(name, value.strip(b" \t"))
            return
        # After the head, a trailer field: dropped, its bytes counted (httptools kept them).
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes > MAX_HEAD_BYTES:
            raise HttpParserCallbackError("Trailer section too large.")

    def on_headers_complete(self) -> None:
        self._head_arrived()
        self._in_head = self._in_fields = self._head_begun = False
        self._in_body = True
        # A head that ended within the read that crossed the bound (or within the read it
        # began in): what the request keeps of it, refused past the bound all the same
        # (uvicorn answers the parser's error with its 400, and closes).
        kept = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if kept > MAX_HEAD_BYTES:
            raise HttpParserCallbackError("Request head too large.")
        # httptools parses an HTTP/0.9 request line (no version: "GET /") and HTTP/2.0 ones,
        # which uvicorn answered in HTTP/1.1: 505 (RFC 9110 15.6.6), as any major version the
        # server does not speak. A minor version of 1 past 1.1 (HTTP/1.2, which llhttp refused
        # with a 400) is served as 1.1, the highest the server implements (RFC 9112 2.3).
        version = self.parser.get_http_version()
        major, _, minor = version.partition(".")
        if major == "1" and minor.isdigit() and int(minor) > 1:
            version = "1.1"
        if version not in ("1.0", "1.1"):
            raise self._refuse(505, "HTTP version not supported.")
        if not self.url.startswith((b"/", b"*")):
            if not self._names_the_host(self.url):
                raise HttpParserCallbackError("Request target names another host.")
            self.url = _with_a_path(self.url, self.parser.get_method())
        # An upgrade not made (anything but a WebSocket's: h2c, say): httptools takes the
        # request as bodyless all the same and, from its next read on, parses what follows as
        # requests, so its body became a request of its own (smuggled past a proxy that
        # passes Upgrade on, as one set up for WebSockets does), and the app got no body.
        # One with a body gets a 400; one without is answered, and its connection closed
        # (what followed it in its read is dropped).
        # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing (a 1.0
        # peer in front may not know it: the chunks were a request of their own to httptools);
        # nginx answers it 400 too.
        codings = [value for name, value in self.headers if name == b"transfer-encoding"]
        if version != "1.1" and codings:
            raise HttpParserCallbackError("Transfer-Encoding in an HTTP/1.0 request.")
        # An empty element in the list (",chunked", "chunked, ,"): httptools took the body
        # as chunked, where h11 and nginx refuse it (nginx compares the value with "chunked"
        # whole) and a proxy that forwards what it does not recognise reads no body, so the
        # chunks were a body here and requests there. A 400, as from both.
        listed = _codings(codings)
        if b"" in listed:
            raise HttpParserCallbackError("Malformed Transfer-Encoding.")
        # A coding before chunked ("gzip, chunked"): httptools took the body as chunked and
        # handed the app what was still gzipped, as if it were the content. Chunked is the
        # one coding of ours: 501 to the others (RFC 9112 6.1, as nginx answers).
        if codings and listed != [b"chunked"]:
            raise self._refuse(501, "Transfer coding not implemented.")
        unmade_upgrade = self.parser.should_upgrade() and not self._should_upgrade()
        if unmade_upgrade and self._has_a_body():
            raise HttpParserCallbackError("Request body with an upgrade not made.")
        before = self.cycle
        super().on_headers_complete()
        self.scope["http_version"] = version  # (uvicorn's: the request line's, "1.2" too)
        if self.cycle is not before:  # (none for a WebSocket's upgrade)
            self._message_cycle = self.cycle
            if self.cycle.waiting_for_100_continue:
                _close_after_an_answer_before_the_body(self.cycle)
        if unmade_upgrade:
            self.cycle.keep_alive = False

    def on_chunk_header(self) -> None:
        # Its data follows, or, for the last chunk, the trailer section.
        self._in_fields = self._chunked_read = True
        self._head_bytes = self._trailer_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._in_fields = False
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._message_cycle = None
        self._in_fields = self._in_body = False
        self._body_done()
        super().on_message_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            return  # the connection is the WebSocket protocol's now
        if self.cycle.response_complete and not self.pipeline:  # answered before its body ended
            self._await_head()

    def _should_upgrade(self) -> bool:
        """uvicorn's (a WebSocket's upgrade, with an implementation), but not behind a request
        still being read or answered (pipelined): uvicorn made it at once, its 101 went
        before (or amid) the earlier answer, and once that was done, the old protocol's
        keep-alive and head timers closed the WebSocket's connection. Such an upgrade is not
        made: its request is answered as any with an upgrade not made, then the connection
        closed."""
        cycle = self.cycle
        if self.pipeline or (cycle is not None and not cycle.response_complete):
            return False
        return super()._should_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn's warning, without its advice to install a WebSocket library when none is
        in use: ``serve`` turns WebSockets off on purpose (its app has none)."""
        self.logger.warning("Unsupported upgrade request.")

    def _has_a_body(self) -> bool:
        """Whether the request's head announces a body (httptools checked its framing)."""
        return any(
            name == b"transfer-encoding" or (name == b"content-length" and value.strip(b" 0"))
            for name, value in self.headers
        )

    def _names_the_host(self, target: bytes) -> bool:
        """Whether an absolute-form ``target`` names the authority of the request's one Host
        field (a name's case and the scheme's default port aside), and no user."""
        hosts = [value for name, value in self.headers if name == b"host"]
        try:
            url = parse_url(target)
        except HttpParserInvalidURLError:
            return False
        scheme = (url.schema or b"").lower()
        if len(hosts) != 1 or scheme not in _DEFAULT_PORTS or url.userinfo or not url.host:
            return False
        default = _DEFAULT_PORTS[scheme]
        return _authority(hosts[0], default) == (url.host.lower(), url.port or default)


_DEFAULT_PORTS = {b"http": 80, b"https": 443}


def _close_after_an_answer_before_the_body(cycle: Any) -> None:
    """``cycle``'s answer closes the connection (``Connection: close``) when it begins before
    its request's body was asked for (``100 Continue``, when the app first reads it) and
    before any of it came: its client, told to wait, may never send it, or send it still
    (RFC 9110 10.1.1), so what comes next cannot be told apart as the body or the next
    request. uvicorn kept the connection and read on, the client's next request as the body
    (or waited for it until the body timeout). A body begun is read on to its end, as for any
    answer before its body (the client is sending it)."""
    send = cycle.send

    async def answer(message: Any) -> None:
        # Still waiting: the app never read, so ``body`` is all of the body that came.
        waiting = cycle.waiting_for_100_continue and cycle.more_body and not cycle.body
        if message["type"] == "http.response.start" and waiting:
            cycle.keep_alive = False
        await send(message)

    cycle.send = answer  # (looked up when the app is called, and for uvicorn's 500)


def _codings(fields: list[bytes]) -> list[bytes]:
    """The transfer codings that Transfer-Encoding ``fields`` list, lowercase, in order (an
    empty element as ``b""``)."""
    return [coding.strip(b" \t").lower() for field in fields for coding in field.split(b",")]


def _with_a_path(target: bytes, method: bytes) -> bytes:
    """An absolute-form ``target`` whose path is empty (``http://host``, ``http://host?q``)
    in origin form: its path is "/" (RFC 9110 4.2.3), or for an OPTIONS without a query the
    asterisk form (RFC 9112 3.2.4); uvicorn found no path and answered 400. Any other
    ``target`` as it is."""
    url = parse_url(target)
    if url.path:
        return target
    if method == b"OPTIONS" and not url.query:
        return b"*"
    return b"/?" + url.query if url.query else b"/"


def _authority(host_field: bytes, default_port: int) -> tuple[bytes, int] | None:
    """A Host field's host (IPv6 without its brackets, lowercase) and port, or ``None``."""
    host, port = host_field.strip().lower(), b""
    if host.startswith(b"["):
        host, bracket, rest = host[1:].partition(b"]")
        if not bracket or (rest and not rest.startswith(b":")):
            return None
        port = rest[1:]
    elif b":" in host:
        host, _, port = host.rpartition(b":")
    if not port:
        return host, default_port
    return (host, int(port)) if port.isdigit() and len(port) <= 5 else None
