"""uvicorn's httptools protocol (``HTTP_PARSER``) with the two limits h11 kept and it does not:

- A request's head (request line and header fields) is bounded: uvicorn's httptools code
  keeps every byte of a head until its blank line, with no limit (a client sending headers
  for ever held the memory it sent), where h11 refused one past 16 KiB with a 400. Here a
  head longer than ``MAX_HEAD_BYTES`` gets the same 400 and the connection is closed.
- Trailer fields (after a chunked body) are dropped, as h11 drops them: uvicorn appended them
  to the scope's headers, the list the app had already read, so a trailer could add a second
  ``Host`` (or any header) after the Host check had passed the request.

Imported only to serve (it needs httptools, a dependency: ``http_parser_problem`` says when
it is missing)."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Far above any head a browser or client of ours sends (cookies included), and what one
# connection can make the process hold before its 400, plus the read that crossed it.
MAX_HEAD_BYTES = 64 * 1024


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a bounded request head and no trailer fields."""

    _in_head = True  # a connection starts with a request's head
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        super().data_received(data)
        if not self._in_head:
            self._head_bytes = 0
        elif was_in_head:  # every byte of this read was head (or the parser refused it)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
                msg = "Request head too large."
                self.logger.warning(msg)
                self.send_400_response(msg)
        # else a new request began within this read, after the end of another: counted from
        # the next read (at most one read more than MAX_HEAD_BYTES).

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:  # after the head, a trailer field: dropped
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
