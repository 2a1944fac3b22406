"""Relayed events that need no parsing: passed on as bytes, the model name rewritten.

A committed stream is mostly content chunks that no rule changes but ``model``: no usage,
error, reasoning, tool calls or finish reason. :class:`BytePath` recognises them on their bytes
and gives what :meth:`gateway.edge.relay.Relay.rewrite` would have written for them, without
parsing, normalising, classifying or re-encoding; anything else it declines (None) and the
relay takes its full path. Two checks, the second much cheaper:

- :func:`~gateway.routing.sse.plain_chunk` (a handful of substring searches), then
- once one chunk passed, its *template*: the bytes before its ``"content":"`` and after the
  string's end. A chunk that is that prefix, a string body without a quote, and that suffix
  is the same chunk with other text (the stream's id, created and model repeat in every
  chunk), so it needs only ``startswith``, ``endswith`` and one search for a quote.

:meth:`BytePath.run` does the same for every event one read delivered, as one span.
"""

from __future__ import annotations

from gateway.routing.sse import DONE, plain_chunk

_CONTENT = b'"content":"'
_BACKSLASH = 0x5C


class _Template:
    __slots__ = ("pre", "pre_out", "quotes", "suf", "suf_out", "suf_run")

    def __init__(self, pre: bytes, suf: bytes, replacements: tuple[tuple[bytes, bytes], ...]):
        self.pre, self.suf = pre, suf
        pre_out, suf_out = pre, suf
        for old, new in replacements:
            pre_out, suf_out = pre_out.replace(old, new), suf_out.replace(old, new)
        self.pre_out = pre_out
        self.suf_out = suf_out + b"\n\n"
        self.suf_run = suf + b"\n\n"
        self.quotes = pre.count(b'"') + suf.count(b'"')


def _template(event: bytes, replacements: tuple[tuple[bytes, bytes], ...]) -> _Template | None:
    at = event.find(_CONTENT)
    if at < 0:
        return None
    start = at + len(_CONTENT)
    end = event.find(b'"', start)
    if end < 0 or event.find(b"\\", start, end) >= 0:
        return None  # an escape in this chunk's text: learn from a later one
    return _Template(event[:start], event[end:], replacements)


class BytePath:
    """The no-parse path of one relay. ``plain``: normalised dialect, the bytes a plain chunk
    shows once the model is rewritten (``"model":"<variant>"``); None: a raw dialect."""

    __slots__ = ("_tpl", "plain", "replacements")

    def __init__(self, plain: bytes | None, replacements: tuple[tuple[bytes, bytes], ...]):
        self.plain = plain
        self.replacements = replacements
        self._tpl: _Template | None = None

    def one(self, event: bytes) -> bytes | None:
        """The bytes to relay for ``event`` (its blank line included), or None."""
        tpl = self._tpl
        if tpl is not None:
            pre, suf = tpl.pre, tpl.suf
            end = len(event) - len(suf)
            if (
                event.startswith(pre)
                and event.endswith(suf)
                and end >= len(pre)
                and event.find(b'"', len(pre), end) < 0
                and event[end - 1] != _BACKSLASH
            ):
                return tpl.pre_out + event[len(pre) : end] + tpl.suf_out
        if not self._checked(event):
            return None
        out = event
        for old, new in self.replacements:
            out = out.replace(old, new)
        if self.plain is not None and self.plain not in out:
            return None
        if tpl is None:
            self._tpl = _template(event, self.replacements)
        return out + b"\n\n"

    def _checked(self, event: bytes) -> bool:
        if self.plain is not None:
            return plain_chunk(event)
        return not (  # what Relay.rewrite parses in a raw stream
            event.startswith(DONE)
            or b"network_error" in event
            or b'"error"' in event
            or b'"usage":{' in event
            or b'"usage": {' in event
        )

    def run(self, span: bytes, n: int) -> bytes | None:
        """:meth:`one` for ``n`` whole one-line ``data: {...}`` events at once (``span``, each
        with its blank line), when every one fits the template; else None."""
        tpl = self._tpl
        if (
            tpl is None
            or span.count(tpl.pre) != n
            or span.count(tpl.suf_run) != n
            or span.count(b'"') != n * tpl.quotes
            or span.count(b"\\" + tpl.suf) != 0
        ):
            return None
        if tpl.pre_out != tpl.pre:
            span = span.replace(tpl.pre, tpl.pre_out)
        if tpl.suf_out != tpl.suf_run:
            span = span.replace(tpl.suf_run, tpl.suf_out)
        return span
