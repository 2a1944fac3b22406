"""The shortest real path: openai SDK -> gateway -> simulator, and back."""

from __future__ import annotations

import openai


async def test_auto_answers_with_variant_headers(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "hello"}]
    )
    resp = raw.parse()
    assert raw.headers["x-glm-variant"] == resp.model
    assert raw.headers["x-glm-attempts"] == "1"
    assert resp.choices[0].message.content
