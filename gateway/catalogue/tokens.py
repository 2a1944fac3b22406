"""Prompt token counts that never under-count: a cheap byte bound, and cl100k on demand.

GLM's own tokenizer is not available offline. cl100k_base over-counts GLM for Chinese (about
1.5x) and is about on par for English (research note §6), so it is the safe "exact" figure.
Below it sits a bound that needs no tokenizer at all: every cl100k token covers at least one
UTF-8 byte, so the byte length of a text is never less than its token count.

What is counted, the same way for both figures: every string value in the messages (contents,
text parts, names, ``tool_calls`` ids and arguments, ``reasoning_content``, ...; not the keys),
the serialised ``tools`` JSON (keys included: the template renders them), plus
``MESSAGE_OVERHEAD`` per message and ``PROMPT_OVERHEAD`` once. An image, video, audio or file
part costs a flat ``IMAGE_TOKENS`` instead of the bytes of its URL or base64 data: the GLM
vision token cost is unknown (§6.3), so this is a reserve, not a bound; 1261 handling catches
the rest.

cl100k is tiktoken (a core dependency) over the BPE file shipped in this package
(``data/cl100k_base.tiktoken.gz``, checked against its sha256; no network, and no process-wide
``TIKTOKEN_CACHE_DIR`` to set). GLM-4's own tokenizer (a tiktoken BPE of ~151k ranks with
cl100k's pre-tokenizer) is in no package on PyPI. Without tiktoken or the file, ``exact()``
returns the bound, and :func:`exact_counting_problem` says why (``serve`` warns at start).

A :class:`TokenCounter` (one per process, on the ``Config``) remembers the cl100k count of every
text it tokenized: a conversation re-sends its whole history each turn, so only the new
messages cost tokenizing.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import importlib.util
import logging
import threading
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger("glm_gateway.tokens")

IMAGE_TOKENS: Final = 1600
"""Reserve per image/video/audio/file part."""
MESSAGE_OVERHEAD: Final = 8
"""Role and template markers per message (4-8 for GLM, unverified: the high end)."""
PROMPT_OVERHEAD: Final = 3
"""``[gMASK]<sop>`` and the ``<|assistant|>`` that primes the answer."""

MEDIA_KEYS: Final = frozenset({"image_url", "video_url", "file_url", "input_audio", "file"})
"""Keys whose value is a media payload: counted as IMAGE_TOKENS, never as text."""

# The file tiktoken downloads (https://openaipublic.blob.core.windows.net/encodings/
# cl100k_base.tiktoken), gzipped; data/NOTICE says where it is from and its license. Pattern
# and specials: tiktoken_ext.openai_public.
_CL100K_FILE: Final = Path(__file__).with_name("data") / "cl100k_base.tiktoken.gz"
_CL100K_SHA256: Final = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN: Final = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL: Final = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


class TokenCounter:
    """Sums cl100k counts of texts, remembering each text's count (least recently used out).

    A conversation re-sends its history every turn, and role names, tool-call ids and system
    prompts repeat across requests: a lookup costs a fraction of a tokenizer call even for a
    4-character text, so every text is remembered, up to ``max_entries`` texts and ``max_chars``
    characters in all (1 to 4 bytes each in memory); a text over a quarter of ``max_chars`` is
    never kept. Thread-safe (exact counts may be computed off the event loop); tokenizing runs
    outside the lock.
    """

    __slots__ = ("_cache", "_chars", "_lock", "_max_chars", "_max_entries")

    def __init__(self, *, max_entries: int = 16_384, max_chars: int = 8 * 2**20) -> None:
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self._max_entries = max_entries
        self._max_chars = max_chars

    def __len__(self) -> int:
        return len(self._cache)

    def count(self, texts: Sequence[str], encoding: tiktoken.Encoding) -> int:
        """The sum of ``len(encoding.encode_ordinary(t))`` over ``texts`` (counts are remembered
        per text: pass the same encoding every time)."""
        known, missed = self._lookup(texts)
        if not missed:
            return known
        encode = encoding.encode_ordinary
        counted = {text: len(encode(text)) for text in dict.fromkeys(missed)}
        self._remember(counted)
        return known + sum(map(counted.__getitem__, missed))

    def _lookup(self, texts: Sequence[str]) -> tuple[int, list[str]]:
        """The remembered part of the sum, and the texts not remembered."""
        known = 0
        missed: list[str] = []
        cache = self._cache
        get, touch = cache.get, cache.move_to_end
        with self._lock:
            for text in texts:
                n = get(text)
                if n is None:
                    if text:
                        missed.append(text)
                else:
                    touch(text)
                    known += n
        return known, missed

    def _remember(self, counted: dict[str, int]) -> None:
        cache, largest = self._cache, self._max_chars // 4
        with self._lock:
            for text, n in counted.items():
                if len(text) <= largest and text not in cache:
                    cache[text] = n
                    self._chars += len(text)
            while len(cache) > self._max_entries or self._chars > self._max_chars:
                old, _ = cache.popitem(last=False)
                self._chars -= len(old)


_new: Final = object.__new__


class PromptTokens:
    """Token counts for one request's prompt (raw parsed JSON; malformed input never raises).

    Read-only attributes (plain slots, not properties: routing reads them several times per
    request): :attr:`upper`, :attr:`best`, :attr:`method`.
    """

    __slots__ = ("_counter", "_exact", "_fixed", "_texts", "best", "method", "upper")

    upper: int
    """A bound >= the cl100k count (media at IMAGE_TOKENS each). O(size), no tokenizer."""
    best: int
    """The exact count if it was computed, else the bound."""
    method: str
    """``"cl100k"`` once the exact count was computed, else ``"bound"``."""

    def __init__(
        self, messages: Any, tools: Any | None, counter: TokenCounter | None = None
    ) -> None:
        items = messages if isinstance(messages, list) else [] if messages is None else [messages]
        texts: list[str] = []
        self._fill(texts, flat_texts(items, texts), len(items), tools, counter)

    @classmethod
    def of_walked(
        cls,
        texts: list[str],
        deeper: list[Any],
        messages: int,
        tools: Any | None,
        counter: TokenCounter | None = None,
    ) -> PromptTokens:
        """The prompt of ``messages`` messages whose walk the caller did (the needs resolver's
        one walk over them): ``texts`` and ``deeper`` as :func:`flat_texts` left them."""
        self = cls.__new__(cls)
        self._fill(texts, deeper, messages, tools, counter)
        return self

    def _fill(
        self,
        texts: list[str],
        deeper: list[Any],
        messages: int,
        tools: Any | None,
        counter: TokenCounter | None,
    ) -> None:
        fixed = PROMPT_OVERHEAD + MESSAGE_OVERHEAD * messages
        if deeper:
            fixed += _collect(deeper, texts)
        if tools:
            try:
                texts.append(orjson.dumps(tools).decode())
            except TypeError:  # not JSON (orjson.JSONEncodeError is a TypeError): walk it
                fixed += _collect(tools, texts)
        # The UTF-8 bytes of the texts: joined, a copy and one scan in C cost a fraction of a
        # test per text (surrogates are encoded one by one either way).
        joined = "".join(texts)
        size = len(joined) if joined.isascii() else len(joined.encode("utf-8", "surrogatepass"))
        self._texts = texts
        self._fixed = fixed
        self.upper = self.best = fixed + size
        self.method = "bound"
        self._exact: int | None = None
        self._counter = counter

    def untokenized(self) -> PromptTokens:
        """This prompt as it was before :meth:`exact` ran (same texts, same counter)."""
        copy = PromptTokens.__new__(PromptTokens)
        copy._texts, copy._fixed, copy.upper = self._texts, self._fixed, self.upper
        copy.best, copy.method = self.upper, "bound"
        copy._exact, copy._counter = None, self._counter
        return copy

    def exact(self) -> int:
        """The cl100k_base count plus the same overheads; the bound if cl100k is unavailable.

        Computed once (with a counter, each text once per process while remembered).
        Tokenizing holds the CPU (~tens of ms per 100 KB): prefer :meth:`at_most`.
        """
        if self._exact is None:
            encoding = cl100k()
            if encoding is None:
                return self.upper
            if self._counter is not None:
                counted = self._counter.count(self._texts, encoding)
            else:
                counted = sum(len(encoding.encode_ordinary(t)) for t in self._texts)
            self._exact = self.best = self._fixed + counted
            self.method = "cl100k"
        return self._exact

    def at_most(self, limit: int) -> bool:
        """Whether the prompt fits in ``limit`` tokens; tokenizes only if the bound does not."""
        return self.upper <= limit or self.exact() <= limit


def joined_prompt(
    texts: list[str], joined: str, messages: int, counter: TokenCounter | None = None
) -> PromptTokens:
    """The prompt of ``messages`` flat messages and no tools whose strings are ``texts`` and
    ``joined`` their join (the caller made it): :meth:`PromptTokens.of_walked`'s figures in one
    call (a module function: a class's static or class method is not a specialised call)."""
    self: PromptTokens = _new(PromptTokens)
    fixed = PROMPT_OVERHEAD + MESSAGE_OVERHEAD * messages
    size = len(joined) if joined.isascii() else len(joined.encode("utf-8", "surrogatepass"))
    self._texts = texts
    self._fixed = fixed
    self.upper = self.best = fixed + size
    self.method = "bound"
    self._exact = None
    self._counter = counter
    return self


def flat_texts(items: list[Any], texts: list[str]) -> list[Any]:
    """Append the string values of each flat message (a dict with no media key) to ``texts``;
    return what is left for :func:`_collect`: the other values, and the other messages."""
    deeper: list[Any] = []
    for msg in items:
        if isinstance(msg, dict) and MEDIA_KEYS.isdisjoint(msg):
            for value in msg.values():
                if isinstance(value, str):
                    texts.append(value)
                else:
                    deeper.append(value)
        else:
            deeper.append(msg)
    return deeper


def _collect(root: Any, texts: list[str]) -> int:
    """Append every string under ``root`` to ``texts``; return the media reserve.

    Iterative, so hostile nesting cannot overflow the stack.
    """
    media = 0
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in MEDIA_KEYS and value:
                    media += IMAGE_TOKENS
                else:
                    stack.append(value)
    return media


def exact_counting_problem() -> str | None:
    """Why exact (cl100k) counting is unavailable in this install, or None when it is.

    Cheap (no import, no file read): ``serve`` asks at start. A file that is there but damaged
    is found by :func:`cl100k` when it first loads.
    """
    try:
        missing = importlib.util.find_spec("tiktoken") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        return "the tiktoken package is not installed"
    if not _CL100K_FILE.is_file():
        return f"the BPE file {_CL100K_FILE} is missing"
    return None


@functools.lru_cache(maxsize=1)
def cl100k() -> tiktoken.Encoding | None:
    """cl100k_base from the BPE file shipped in the package, loaded once per process (~0.1 s);
    None if tiktoken is not installed or the file is missing or damaged. Never touches the
    network."""
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        data = gzip.decompress(_CL100K_FILE.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        log.warning("exact prompt token counting is off: cannot read %s: %s", _CL100K_FILE, exc)
        return None
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        log.warning("exact prompt token counting is off: %s is not the cl100k file", _CL100K_FILE)
        return None
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in data.splitlines() if line)
    }
    return tiktoken.Encoding(
        name="cl100k_base",
        pat_str=_CL100K_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=_CL100K_SPECIAL,
    )
