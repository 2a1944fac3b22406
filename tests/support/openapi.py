"""OpenAI's published OpenAPI document as JSON Schema validators, for conformance tests.

The spec (``../shared/spec/openai-openapi.yaml``, 3 MB) is parsed once and cached as a pickle under
``tests/out/`` keyed by the file's size and mtime, so later runs (and other processes) pay ~0.1 s
instead of ~1.5 s. OpenAPI 3.0's ``nullable: true``, which the 3.1 document still uses, is rewritten
into the 3.1 form (``"null"`` added to ``type``, ``None`` to ``enum``; a typeless schema becomes
``anyOf: [null, itself]``) as ``../shared/spec/README.md`` asks, and validation uses Draft 2020-12
with ``#/components/schemas/...`` references resolved through a ``referencing`` registry.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
SPEC = Path(os.environ.get("GLM_OPENAPI_SPEC", ROOT.parent / "shared/spec/openai-openapi.yaml"))
CACHE_DIR = ROOT / "tests" / "out"
_REWRITE_VERSION = 1
"""Bump when :func:`rewrite_nullable` changes, so stale caches are not used."""
_BASE = "urn:openai-openapi"

SCHEMAS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "ErrorResponse",
)


def rewrite_nullable(node: Any) -> Any:
    """A copy of ``node`` with every OpenAPI 3.0 ``nullable: true`` in JSON Schema 2020-12 form."""
    if isinstance(node, list):
        return [rewrite_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: rewrite_nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is not True:
        if "nullable" in node:  # `nullable: false`, or a property that is named "nullable"
            out["nullable"] = rewrite_nullable(node["nullable"])
        return out
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in types:
            out["type"] = [*types, "null"]
        return out
    # No `type` ($ref, oneOf, anyOf, allOf ...): null, or whatever the schema allows.
    return {"anyOf": [{"type": "null"}, out]}


def _load_yaml(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as f:
        doc = yaml.load(f, Loader=loader)
    if not isinstance(doc, dict) or "components" not in doc:
        raise RuntimeError(f"{path} is not an OpenAPI document with components")
    return doc


@functools.lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    """The rewritten spec (parsed once per process, pickled once per spec file version)."""
    if not SPEC.is_file():
        raise FileNotFoundError(
            f"OpenAI OpenAPI spec not found at {SPEC}: the tests expect the shared/ directory "
            "beside the repository (or set GLM_OPENAPI_SPEC to the file)."
        )
    st = SPEC.stat()
    cache = CACHE_DIR / f"openapi-{st.st_size}-{st.st_mtime_ns}-v{_REWRITE_VERSION}.pickle"
    if cache.is_file():
        try:
            with cache.open("rb") as f:
                doc: dict[str, Any] = pickle.load(f)
            return doc
        except (OSError, EOFError, pickle.UnpicklingError):
            pass  # a half-written or stale cache: rebuild it
    doc = rewrite_nullable(_load_yaml(SPEC))
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, cache)  # atomic: parallel test runs never read a partial file
    return doc


@functools.lru_cache(maxsize=1)
def _registry() -> Registry[Any]:
    resource = DRAFT202012.create_resource(spec())
    return Registry().with_resource(_BASE, resource)


@functools.cache
def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A Draft 2020-12 validator for ``#/components/schemas/<schema_name>``."""
    if schema_name not in spec()["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {SPEC}")
    return jsonschema.Draft202012Validator(
        {"$ref": f"{_BASE}#/components/schemas/{schema_name}"},
        registry=_registry(),
        format_checker=None,
    )


def errors(schema_name: str, instance: Any) -> list[str]:
    """Every validation error as ``path: message`` (empty when the instance conforms)."""
    out = []
    for err in validator(schema_name).iter_errors(instance):
        where = "/".join(str(p) for p in err.absolute_path) or "<root>"
        out.append(f"{where}: {err.message}")
    return out


def validate(schema_name: str, instance: Any) -> None:
    """Raise AssertionError listing every way ``instance`` fails ``schema_name``."""
    problems = errors(schema_name, instance)
    if problems:
        raise AssertionError(
            f"{schema_name} validation failed ({len(problems)} error(s)):\n  "
            + "\n  ".join(problems[:20])
        )
