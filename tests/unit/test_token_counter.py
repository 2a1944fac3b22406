"""gateway.catalogue.tokens.TokenCounter: remembered cl100k counts, bounded, thread-safe."""

from __future__ import annotations

import threading
from typing import Any, cast

from gateway.catalogue.loader import load_config
from gateway.catalogue.needs import resolve_needs
from gateway.catalogue.tokens import PromptTokens, TokenCounter
from tests.support.cl100k import needs_cl100k
from tests.support.procs import CONFIG


class FakeEncoding:
    """One token per character; counts the texts it was asked to encode."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode_ordinary(self, text: str) -> list[int]:
        self.calls.append(text)
        return [0] * len(text)


def count(counter: TokenCounter, texts: list[str], enc: FakeEncoding) -> int:
    return counter.count(texts, cast(Any, enc))


def test_remembers_every_text_and_sums_duplicates() -> None:
    counter, enc = TokenCounter(), FakeEncoding()
    texts = ["user", "hello there", "user", "assistant", ""]
    assert count(counter, texts, enc) == 4 + 11 + 4 + 9
    assert sorted(enc.calls) == ["assistant", "hello there", "user"]  # each once, "" never
    enc.calls.clear()
    assert count(counter, [*texts, "new"], enc) == 4 + 11 + 4 + 9 + 3
    assert enc.calls == ["new"]  # the history was remembered
    assert len(counter) == 4


def test_bounded_by_entries_least_recently_used_first() -> None:
    counter, enc = TokenCounter(max_entries=3), FakeEncoding()
    count(counter, ["a", "bb", "ccc"], enc)
    count(counter, ["a"], enc)  # a is now the most recently used
    count(counter, ["dddd"], enc)  # evicts bb
    enc.calls.clear()
    assert count(counter, ["a", "ccc", "dddd"], enc) == 8
    assert enc.calls == []
    assert count(counter, ["bb"], enc) == 2
    assert enc.calls == ["bb"]
    assert len(counter) == 3


def test_bounded_by_characters_and_huge_texts_are_not_kept() -> None:
    counter, enc = TokenCounter(max_chars=100), FakeEncoding()
    count(counter, ["x" * 20, "y" * 20, "z" * 20], enc)
    count(counter, ["w" * 25], enc)  # 85 characters: all kept
    assert len(counter) == 4
    count(counter, ["v" * 25], enc)  # 110 > 100: the oldest goes
    assert len(counter) == 4
    enc.calls.clear()
    count(counter, ["x" * 20], enc)
    assert enc.calls == ["x" * 20]
    huge = "h" * 26  # over a quarter of max_chars
    assert count(counter, [huge], enc) == 26
    enc.calls.clear()
    assert count(counter, [huge], enc) == 26
    assert enc.calls == [huge]


def test_concurrent_counts_are_right() -> None:
    counter, enc = TokenCounter(max_entries=50), FakeEncoding()
    texts = [f"message {i} " * (i % 7 + 1) for i in range(200)]
    want = sum(len(t) for t in texts)
    got: list[int] = []

    def work() -> None:
        for k in range(20):
            got.append(count(counter, texts[k::3] + texts, enc) - sum(map(len, texts[k::3])))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [want] * 80
    assert len(counter) <= 50


@needs_cl100k
def test_prompt_tokens_with_a_counter_count_the_same() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "智谱清言 " * 200},
        {"role": "assistant", "content": "word " * 300, "name": "bot"},
        {"role": "user", "content": [{"type": "text", "text": "<|endoftext|> again " * 50}]},
    ]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    counter = TokenCounter()
    plain = PromptTokens(messages, tools).exact()
    assert PromptTokens(messages, tools, counter).exact() == plain
    assert len(counter) > 0
    assert PromptTokens(messages, tools, counter).exact() == plain  # from memory


@needs_cl100k
def test_the_config_counter_remembers_a_conversation_across_requests() -> None:
    config = load_config(CONFIG, demo_simulator_url="http://127.0.0.1:9")
    history = [{"role": "user", "content": f"turn {i} " + "word " * 300} for i in range(4)]
    first = resolve_needs({"model": "auto", "messages": history}, {}, config)
    first.prompt.exact()
    remembered = len(config.tokens)
    assert remembered >= 4
    turn = {"role": "user", "content": "and then? " * 100}
    later = resolve_needs({"model": "auto", "messages": [*history, turn]}, {}, config)
    assert later.prompt.exact() == PromptTokens([*history, turn], None).exact()
    assert len(config.tokens) == remembered + 1  # only the new turn was tokenized


def test_untokenized_forgets_only_the_exact_count() -> None:
    p = PromptTokens([{"role": "user", "content": "a " * 50}], None, TokenCounter())
    p.exact()
    q = p.untokenized()
    assert (q.upper, q.method, q.best) == (p.upper, "bound", p.upper)
    assert q.exact() == p.exact()
