"""GLM-4.5V writes its reasoning and answer box into ``content``: split them back out.

``<think>…</think>`` is reasoning (``reasoning_content``); ``<|begin_of_box|>…<|end_of_box|>``
wraps the answer and is unwrapped. In a stream a tag may be cut across chunks, so the splitter
holds back a trailing fragment that could still become a tag.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
BOX_OPEN = "<|begin_of_box|>"
BOX_CLOSE = "<|end_of_box|>"
_TAGS = (THINK_OPEN, THINK_CLOSE, BOX_OPEN, BOX_CLOSE)


class TagSplitter:
    """Feeds content text in pieces; returns (reasoning, content) text as it becomes certain."""

    __slots__ = ("_buf", "_thinking")

    def __init__(self) -> None:
        self._buf = ""
        self._thinking = False

    def feed(self, text: str) -> tuple[str, str]:
        self._buf += text
        reasoning: list[str] = []
        content: list[str] = []
        while "<" in self._buf:
            at, tag = _first_tag(self._buf)
            if tag is None:
                break
            self._emit(self._buf[:at], reasoning, content)
            self._buf = self._buf[at + len(tag) :]
            if tag == THINK_OPEN:
                self._thinking = True
            elif tag == THINK_CLOSE:
                self._thinking = False
        keep = _partial_tag(self._buf)
        self._emit(self._buf[: len(self._buf) - keep], reasoning, content)
        self._buf = self._buf[len(self._buf) - keep :]
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """Whatever is held back (a fragment that never became a tag), at the end."""
        rest, self._buf = self._buf, ""
        return (rest, "") if self._thinking else ("", rest)

    def _emit(self, text: str, reasoning: list[str], content: list[str]) -> None:
        if text:
            (reasoning if self._thinking else content).append(text)


def _first_tag(buf: str) -> tuple[int, str | None]:
    best, found = len(buf), None
    for tag in _TAGS:
        at = buf.find(tag)
        if 0 <= at < best:
            best, found = at, tag
    return best, found


def _partial_tag(buf: str) -> int:
    """Length of a trailing fragment of ``buf`` that is the start of a tag (0 if none)."""
    at = buf.rfind("<")
    if at < 0:
        return 0
    tail = buf[at:]
    return len(tail) if any(t.startswith(tail) and t != tail for t in _TAGS) else 0


def unwrap(text: str) -> tuple[str, str]:
    """(reasoning, content) of a whole content string."""
    if "<" not in text:
        return "", text
    splitter = TagSplitter()
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.flush()
    return r1 + r2, c1 + c2
