"""uvicorn's httptools protocol (``HTTP_PARSER``) with the two limits h11 kept and it does not:

- A request's head (request line and header fields) is bounded: uvicorn's httptools code
  keeps every byte of a head until its blank line, with no limit (a client sending headers
  for ever held the memory it sent), where h11 refused one past 16 KiB with a 400. Here a
  head longer than ``MAX_HEAD_BYTES`` gets the same 400 and the connection is closed.
- Trailer fields (after a chunked body) are dropped, as h11 drops them: uvicorn appended them
  to the scope's headers, the list the app had already read, so a trailer could add a second
  ``Host`` (or any header) after the Host check had passed the request. Their section is
  bounded as a head is: httptools keeps a field's bytes until it ends, joined piece by piece.

Imported only to serve (it needs httptools, a dependency: ``http_parser_problem`` says when
it is missing)."""

from __future__ import annotations

from httptools import HttpParserCallbackError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Far above any head a browser or client of ours sends (cookies included), and what one
# connection can make the process hold before its 400, plus the read that crossed it.
MAX_HEAD_BYTES = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a bounded request head and no trailer fields."""

    _in_head = True  # a connection starts with a request's head: its fields are the request's
    _in_fields = True  # in a head or a chunked body's trailer section: bytes counted
    _head_bytes = 0  # those bytes, since the head (or the last chunk's size line) began
    _body_bytes = 0  # body bytes in the read being parsed

    def data_received(self, data: bytes) -> None:
        self._body_bytes = 0
        super().data_received(data)
        if not self._in_fields:
            self._head_bytes = 0
            return
        # Every byte of this read that was not body: the fields being read, plus whatever
        # came before them in the read (a request's head, pipelined, counts twice at most).
        self._head_bytes += len(data) - self._body_bytes
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            msg = "Request head too large."
            self.logger.warning(msg)
            self.send_400_response(msg)

    def on_message_begin(self) -> None:
        self._in_head = self._in_fields = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # after the head, a trailer field: dropped
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = self._in_fields = False
        # A head that ended within the read that crossed the bound (or within the read it
        # began in): what the request keeps of it, refused past the bound all the same
        # (uvicorn answers the parser's error with its 400, and closes).
        kept = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if kept > MAX_HEAD_BYTES:
            raise HttpParserCallbackError("Request head too large.")
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        # Its data follows, or, for the last chunk, the trailer section.
        self._in_fields = True
        self._head_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._in_fields = False
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_fields = False
        super().on_message_complete()
