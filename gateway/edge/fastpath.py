"""Relayed events that need no parsing: passed on as bytes, the model name rewritten.

A committed stream is mostly content chunks that no rule changes but ``model``: no usage,
error, reasoning, tool calls or finish reason. :class:`BytePath` recognises them on their bytes
and gives what :meth:`gateway.edge.relay.Relay.rewrite` would have written for them, without
parsing, normalising, classifying or re-encoding; anything else it declines (None) and the
relay takes its full path. Two checks, the second much cheaper:

- :func:`~gateway.routing.sse.plain_chunk` (a handful of substring searches), then
- once a chunk passed, its *template* (re-learnt from each chunk that passes the checks
  but not the template): the bytes before its ``"content":"`` and after the string's end.
  A chunk that is that prefix, a string body without a quote, and that suffix
  is the same chunk with other text (the stream's id, created and model repeat in every
  chunk), so it needs only ``startswith``, ``endswith`` and one search for a quote.

:meth:`BytePath.run` does the same at once for the events one read delivered, up to the
last that fits the template (one split at the blank lines, a prefix and suffix check per
event, one search for a quote over the texts joined), and :meth:`BytePath.text_run` gives
their texts for a front-end that reads objects.
"""

from __future__ import annotations

from operator import itemgetter

from gateway.routing.sse import DONE, plain_chunk

_CONTENT = b'"content":"'
_DELTA_CONTENT = b'"delta":{"content":"'
_ROLE_CONTENT = b'"delta":{"role":"assistant","content":"'
"""The first chunk of a stream names the role; the chunks after it are the same without it."""
_SEP = b'"\x00"'
"""Between two texts of a run: their JSON strings' closing and opening quotes, a NUL."""
_BACKSLASH = 0x5C


class _Template:
    __slots__ = ("cut", "pre", "pre_out", "suf", "suf_out", "suf_run")

    def __init__(self, pre: bytes, suf: bytes, replacements: tuple[tuple[bytes, bytes], ...]):
        self.pre, self.suf = pre, suf
        pre_out, suf_out = pre, suf
        for old, new in replacements:
            pre_out, suf_out = pre_out.replace(old, new), suf_out.replace(old, new)
        self.pre_out = pre_out
        self.suf_out = suf_out + b"\n\n"
        self.suf_run = suf + b"\n\n"
        self.cut = itemgetter(slice(len(pre), -len(suf)))
        """An event's text, when the event is prefix + text + suffix (``suf`` is never empty:
        it starts with the string's closing quote)."""

    def text_of(self, event: bytes) -> bytes | None:
        """The text between prefix and suffix when ``event`` fits the template: no quote in
        it, not ending in a backslash (so the suffix's quote closes it); else None."""
        pre, suf = self.pre, self.suf
        end = len(event) - len(suf)
        if (
            event.startswith(pre)
            and event.endswith(suf)
            and end >= len(pre)
            and event.find(b'"', len(pre), end) < 0
            and event[end - 1] != _BACKSLASH
        ):
            return event[len(pre) : end]
        return None


def _template(event: bytes, replacements: tuple[tuple[bytes, bytes], ...]) -> _Template | None:
    at = event.find(_CONTENT)
    if at < 0:
        return None
    start = at + len(_CONTENT)
    end = event.find(b'"', start)
    if end < 0 or event.find(b"\\", start, end) >= 0:
        return None  # an escape in this chunk's text: learn from a later one
    pre = event[:start]
    if pre.endswith(_ROLE_CONTENT):  # a stream's first chunk: the template of those after it
        pre = pre[: -len(_ROLE_CONTENT)] + _DELTA_CONTENT
    return _Template(pre, event[end:], replacements)


def _model_field(event: bytes) -> bytes | None:
    """``"model":"<name>"`` as it stands in ``event`` when it is there once, unescaped."""
    at = event.find(b'"model":"')
    if at < 0 or event.find(b'"model":', at + 8) >= 0:
        return None
    end = event.find(b'"', at + 9)
    if end < 0 or event.find(b"\\", at + 9, end) >= 0:
        return None
    return event[at : end + 1]


class PlainText:
    """What a front-end that reads objects gets for a plain chunk instead of its object: the
    chunk's ``content``, still a JSON string (quotes included)."""

    __slots__ = ("quoted",)

    def __init__(self, quoted: bytes) -> None:
        self.quoted = quoted


class PlainTexts:
    """Several plain chunks in a row (one read's run, :meth:`BytePath.text_run`): their
    ``content`` JSON strings, in order; a front-end writes what one :class:`PlainText` each
    would give."""

    __slots__ = ("quoted",)

    def __init__(self, quoted: list[bytes]) -> None:
        self.quoted = quoted


class BytePath:
    """The no-parse path of one relay. ``plain``: normalised dialect, the ``"model":"<variant>"``
    a plain chunk gets in place of the host's model (any name, as normalising does); None: a
    raw dialect (only the deployment's upstream model id is rewritten, as raw relaying does)."""

    __slots__ = ("_tpl", "plain", "replacements")

    def __init__(self, plain: bytes | None, replacements: tuple[tuple[bytes, bytes], ...]):
        self.plain = plain
        self.replacements = replacements
        self._tpl: _Template | None = None

    def one(self, event: bytes) -> bytes | None:
        """The bytes to relay for ``event`` (its blank line included), or None."""
        tpl = self._tpl
        if tpl is not None and (body := tpl.text_of(event)) is not None:
            return tpl.pre_out + body + tpl.suf_out
        if not self._checked(event):
            return None
        reps = self.replacements
        if self.plain is None:
            out = event
            for old, new in reps:
                out = out.replace(old, new)
        else:  # normalising writes the variant id whatever model the host named
            model = _model_field(event)
            if model is None:
                return None
            reps = ((model, self.plain),)
            out = event.replace(model, self.plain)
        # This chunk passed the checks but not the template (none yet, or it was learnt from
        # a chunk shaped otherwise, such as the first one with ``role``): learn from it.
        self._tpl = _template(event, reps) or tpl
        return out + b"\n\n"

    def text(self, event: bytes) -> bytes | None:
        """For a front-end that reads objects: a plain chunk's ``content`` as its JSON string
        (quotes included), or None (the chunk takes the full path)."""
        tpl = self._tpl
        if tpl is not None and (body := tpl.text_of(event)) is not None:
            return b'"' + body + b'"'
        if not plain_chunk(event):
            return None
        learnt = _template(event, ())
        if learnt is None:
            return None
        self._tpl = learnt
        # this event's own text: its prefix is not the template's when it names the role
        start = event.find(_CONTENT) + len(_CONTENT)
        return b'"' + event[start : len(event) - len(learnt.suf)] + b'"'

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

    def _fits(
        self, buf: bytes, start: int, quote: bool = False
    ) -> tuple[_Template, list[bytes], bytes, bytes, int] | None:
        """The texts of the whole events from ``buf[start:]`` up to the last that ends like the
        template, when every one of them fits it (as :meth:`one` checks one): (template, texts,
        the texts joined with NULs, as JSON strings if ``quote``, the span, end); else None.
        One split at the blank lines, each event's text sliced out, then the span rebuilt from
        the template and the texts and compared with itself: a check of every event's prefix and
        suffix with no Python step per event."""
        tpl = self._tpl
        if tpl is None:
            return None
        suf_run = tpl.suf_run
        last = buf.rfind(suf_run, start)
        if last < 0:
            return None
        end = last + len(suf_run)
        pre = tpl.pre
        span = buf[start:end]
        texts = list(map(tpl.cut, span[:-2].split(b"\n\n")))
        if pre + (suf_run + pre).join(texts) + suf_run != span:
            return None  # an event that is not prefix + text + suffix (or is shorter than both)
        if not quote:
            joined = b"\x00".join(texts)  # no quote in a text, none ending in a backslash
            if b'"' in joined or b"\\\x00" in joined or joined.endswith(b"\\"):
                return None
            return tpl, texts, joined, span, end
        # The texts as JSON strings joined with NULs (``text_run`` splits it): the same
        # checks, the only quotes being the two of each separator.
        joined = _SEP.join(texts)
        if (
            joined.count(b'"') != 2 * (len(texts) - 1)
            or b'\\"\x00' in joined
            or joined.endswith(b"\\")
        ):
            return None
        return tpl, texts, joined, span, end

    def text_run(self, buf: bytes, start: int) -> tuple[list[bytes], int, int] | None:
        """:meth:`text` for the whole events from ``buf[start:]`` that :meth:`run` would take:
        (their texts as JSON strings, count, end); else None."""
        fits = self._fits(buf, start, True)
        if fits is None:
            return None
        _, texts, joined, _, end = fits
        quoted = (b'"' + joined + b'"').split(b"\x00")
        if len(quoted) != len(texts):
            return None  # a NUL in a text (not JSON): the events go one by one
        return quoted, len(texts), end

    def run(self, buf: bytes, start: int) -> tuple[bytes, int, int] | None:
        """:meth:`one` for the whole events from ``buf[start:]`` up to the last that ends like
        the template, at once, when every one of them fits it: (bytes, count, end); else None
        (the events after it, such as the finish chunk and ``[DONE]``, go one by one)."""
        fits = self._fits(buf, start)
        if fits is None:
            return None
        tpl, texts, _, span, end = fits
        if tpl.pre_out == tpl.pre and tpl.suf_out == tpl.suf_run:
            return span, len(texts), end
        between = tpl.suf_out + tpl.pre_out
        return tpl.pre_out + between.join(texts) + tpl.suf_out, len(texts), end
