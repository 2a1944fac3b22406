"""``GET /v1/models``: the 16 variants plus ``auto``, in OpenAI's list shape."""

from __future__ import annotations

import calendar
from typing import Any

from gateway.catalogue.catalogue import Config


def released_epoch(released: str) -> int:
    year, month = (int(p) for p in released.split("-"))
    return calendar.timegm((year, month, 1, 0, 0, 0))


def models_body(config: Config) -> dict[str, Any]:
    cat = config.catalogue
    data: list[dict[str, Any]] = [
        {"id": "auto", "object": "model", "created": 0, "owned_by": "glm-gateway"}
    ]
    for vid, v in cat.variants.items():
        data.append(
            {
                "id": vid,
                "object": "model",
                "created": released_epoch(v.released),
                "owned_by": "zhipu-ai",
            }
        )
    return {"object": "list", "data": data}
