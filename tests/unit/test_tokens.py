"""gateway.catalogue.tokens: the byte bound never under-counts cl100k; media cost a flat reserve."""

from __future__ import annotations

import base64
import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.catalogue import tokens
from gateway.catalogue.tokens import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    PROMPT_OVERHEAD,
    PromptTokens,
    cl100k,
)
from tests.support.cl100k import needs_cl100k

CORPUS = {
    "english": "The quick brown fox jumps over the lazy dog. " * 40,
    "chinese": "智谱清言的大模型支持长上下文，请在最大长度以内发送提示词。" * 30,
    "code": "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n" * 20,
    "json": orjson.dumps({"a": [1, 2.5, None, {"b": "c\u00e9"}], "d": "x" * 50}).decode() * 10,
    "emoji": "😀👍🏽👨‍👩‍👧‍👦🇨🇳🔥✨" * 50,
    "mixed": "GLM-4.6 上下文 200K tokens 🚀 — naïve café, 東京, Ελληνικά, עברית, العربية " * 20,
    "whitespace": " \t\n\r\u3000\u00a0" * 100,
    "digits": "31415926535897932384626433832795028841971693993751" * 20,
    "special": "<|endoftext|> <|fim_prefix|> [gMASK]<sop><|user|>" * 20,
    "empty": "",
}

_RANGES = [
    (0x20, 0x7E),
    (0x00, 0x1F),
    (0xA0, 0x24F),
    (0x300, 0x36F),
    (0x4E00, 0x9FFF),
    (0x3040, 0x30FF),
    (0xAC00, 0xD7A3),
    (0x1F300, 0x1FAFF),
    (0xE000, 0xF8FF),
    (0x10000, 0x10FFFF),
]


def _random_strings(n: int, seed: int = 20261128) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(0, 400)):
            lo, hi = rng.choice(_RANGES)
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    out.append(base64.b64encode(rng.randbytes(3000)).decode())
    out.append(rng.randbytes(2000).decode("latin-1"))
    out.append("a\ud800b\udfffc")  # lone surrogates: json.loads can produce them
    return out


def _user(text: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@needs_cl100k
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bound_is_at_least_cl100k_on_the_corpus(name: str) -> None:
    p = PromptTokens(_user(CORPUS[name]), None)
    assert p.upper >= p.exact()


@needs_cl100k
def test_bound_is_at_least_cl100k_on_random_text() -> None:
    for text in _random_strings(300):
        p = PromptTokens(_user(text), None)
        assert p.upper >= p.exact(), repr(text[:80])


@needs_cl100k
def test_whole_request_bound_with_tools_names_and_tool_calls() -> None:
    messages = [
        {"role": "system", "content": CORPUS["chinese"]},
        {"role": "user", "name": "ana", "content": [{"type": "text", "text": CORPUS["mixed"]}]},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": CORPUS["english"],
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"q": "上下文"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": CORPUS["json"]},
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    p = PromptTokens(messages, tools)
    assert p.upper >= p.exact() > PromptTokens(messages, None).exact()


def test_overheads_and_tools_bytes() -> None:
    tools = [{"type": "function", "function": {"name": "f", "description": "描述"}}]
    bare = PromptTokens([{"content": "hi"}], None)
    assert bare.upper == PROMPT_OVERHEAD + MESSAGE_OVERHEAD + 2
    with_tools = PromptTokens([{"content": "hi"}], tools)
    assert with_tools.upper - bare.upper == len(orjson.dumps(tools))
    assert PromptTokens([], None).upper == PROMPT_OVERHEAD
    chinese = PromptTokens([{"content": "上下文"}], None)
    assert chinese.upper == PROMPT_OVERHEAD + MESSAGE_OVERHEAD + 9


def _image(url: str, kind: str = "image_url") -> dict[str, Any]:
    return {"type": kind, kind: {"url": url}}


def test_images_cost_image_tokens_not_bytes() -> None:
    data_url = "data:image/png;base64," + base64.b64encode(b"\x89PNG" * 100_000).decode()
    text_only = PromptTokens(_user([{"type": "text", "text": "what is this?"}]), None)
    one = PromptTokens(_user([{"type": "text", "text": "what is this?"}, _image(data_url)]), None)
    by_url = PromptTokens(
        _user([{"type": "text", "text": "what is this?"}, _image("https://x/y.png")]), None
    )
    two = PromptTokens(
        _user([_image(data_url), _image(data_url), {"type": "text", "text": "what is this?"}]), None
    )
    extra = len("image_url")  # the part's "type" value is a string like any other
    assert one.upper - text_only.upper == IMAGE_TOKENS + extra
    assert by_url.upper == one.upper
    assert two.upper - one.upper == IMAGE_TOKENS + extra
    assert one.upper < 2 * IMAGE_TOKENS  # 400 KB of base64 is not counted as text
    video = PromptTokens(_user([_image("https://x/v.mp4", "video_url")]), None)
    assert video.upper >= IMAGE_TOKENS


@needs_cl100k
def test_images_are_not_tokenized_either() -> None:
    data_url = "data:image/jpeg;base64," + "A" * 300_000
    p = PromptTokens(_user([_image(data_url), {"type": "text", "text": "hi"}]), None)
    assert IMAGE_TOKENS <= p.exact() <= p.upper < IMAGE_TOKENS + 100


def _deep(depth: int) -> Any:
    node: Any = "bottom"
    for _ in range(depth):
        node = [node]
    return node


@pytest.mark.parametrize(
    ("messages", "tools"),
    [
        (None, None),
        ("just a string", None),
        (42, "tools as a string"),
        ({"role": "user", "content": "not in a list"}, None),
        ([None, 1, 2.5, True, "x", [], {}], None),
        ([{"role": 7, "content": {"weird": ["a", {"b": None}]}, "name": None}], None),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url"}, {"type": "image_url", "image_url": None}],
                }
            ],
            None,
        ),
        ([{"role": "user", "content": _deep(100_000)}], None),
        (_user("x"), [{"a": {1, 2}}]),
        (_user("x"), _deep(100_000)),
        (_user("x"), [{1: "non-string key"}]),
    ],
)
def test_malformed_input_never_raises(messages: Any, tools: Any) -> None:
    p = PromptTokens(messages, tools)
    assert p.upper >= PROMPT_OVERHEAD
    assert p.exact() <= p.upper
    assert p.at_most(10**9)


def test_at_most_uses_the_bound_when_it_fits() -> None:
    p = PromptTokens(_user(CORPUS["english"]), None)
    assert p.at_most(p.upper)
    assert p.method == "bound"
    assert p.best == p.upper


@needs_cl100k
def test_at_most_tokenizes_only_past_the_bound() -> None:
    p = PromptTokens(_user(CORPUS["english"]), None)
    exact = PromptTokens(_user(CORPUS["english"]), None).exact()
    assert exact < p.upper - 1
    assert p.at_most(exact)  # below the bound: tokenized, and it fits
    assert p.method == "cl100k"
    assert p.best == exact
    assert not PromptTokens(_user(CORPUS["english"]), None).at_most(exact - 1)


def test_exact_falls_back_to_the_bound_without_a_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "cl100k", lambda: None)
    p = PromptTokens(_user(CORPUS["chinese"]), None)
    assert p.exact() == p.upper
    assert p.method == "bound"
    assert not p.at_most(p.upper - 1)


@needs_cl100k
def test_loader_matches_tiktoken_cl100k(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our hand-built Encoding (pattern + specials copied from tiktoken_ext) equals tiktoken's."""
    import tiktoken

    # An independent copy: tiktoken's own loader over the cache file LiteLLM bundles (dev extra).
    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    cache = Path(spec.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"
    assert (cache / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4").is_file()  # sha1 of the URL
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    reference = tiktoken.get_encoding("cl100k_base")
    ours = cl100k()
    assert ours is not None
    assert ours.special_tokens_set == reference.special_tokens_set
    for text in [*CORPUS.values(), *_random_strings(50, seed=7)]:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text)


@needs_cl100k
def test_loader_works_offline_without_importing_litellm() -> None:
    code = (
        "import socket, sys\n"
        "def refuse(*a, **k): raise OSError('network used')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from gateway.catalogue.tokens import cl100k\n"
        "enc = cl100k()\n"
        "n = len(enc.encode_ordinary('hello world'))\n"
        "print(enc is not None, n, 'litellm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "2", "False"]


def test_exact_counting_is_part_of_the_install() -> None:
    """tiktoken is a core dependency and the BPE file ships in the package: nothing to warn."""
    assert tokens.exact_counting_problem() is None
    assert tokens._CL100K_FILE.is_file()


@needs_cl100k
def test_long_english_prompt_is_counted_near_its_real_size() -> None:
    """~140k cl100k tokens of English: near that, not the byte bound (~4.5x more), so it fits a
    200k window and not a 128k one."""
    words = [w for w in CORPUS["english"].split() if w] + ["gateway", "routing", "context"]
    rng = random.Random(5)
    text = " ".join(rng.choice(words) for _ in range(128_000))
    real = len(cl100k().encode_ordinary(text))  # type: ignore[union-attr]
    assert 135_000 < real < 150_000
    p = PromptTokens(_user(text), None)
    assert p.upper > 4 * real  # the bound alone would refuse it for a 200k window
    assert real <= p.exact() <= real + PROMPT_OVERHEAD + MESSAGE_OVERHEAD + 8
    assert p.at_most(200_000) and not p.at_most(128_000)
    assert p.method == "cl100k"


_JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12))
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["role", "content", "text", "image_url", "x"]), inner),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    messages=st.one_of(_JSON, st.lists(_JSON, max_size=4)),
    tools=st.one_of(st.none(), _JSON, st.just([{"a": {1, 2}}])),
)
def test_bound_is_the_bytes_of_what_was_collected(messages: Any, tools: Any) -> None:
    """The bound, summed as the messages are walked (flat messages) or after (the rest), is
    the overheads plus every collected text's UTF-8 bytes."""
    p = PromptTokens(messages, tools)
    texts = p._texts
    assert p.upper == p._fixed + sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
