"""Secrets out of text that leaves the process: error bodies, headers, stream events, logs.

A :class:`Redactor` is built at start from plain strings (the configured secrets:
:func:`gateway.catalogue.catalogue.config_secrets`; a config reload adds its own) and replaces
with :data:`PLACEHOLDER`:

1. every configured secret of at least :data:`MIN_SECRET` characters, verbatim (and as it reads
   inside a JSON string);
2. an echo of part of one: any run of key characters (``A-Z a-z 0-9 _ - *``) holding
   :data:`FRAGMENT` consecutive characters of a configured secret, so a host that repeats a
   prefix (``sk-abc12...``), a suffix (``...7890abcdef``) or a masked form with either
   (``sk-abc1****wxyz``) loses the whole run;
3. anything shaped like a credential, configured or not: ``sk-`` / ``sk_`` / ``fw_`` /
   ``tgp_`` keys (OpenAI, OpenRouter ``sk-or-v1-``, SiliconFlow, Novita, virtual keys
   ``sk-glm-``, Fireworks, Together), Zhipu ``<32 hex>.<16 alnum>`` keys, JWTs, AWS access key
   ids (``AKIA``...), Google ``AIza`` keys, masked keys (4+ ``*`` next to key characters); the
   token after ``Bearer`` / ``Basic``; the value after a ``key`` / ``token`` / ``secret`` /
   ``password`` / ``authorization`` / ``signature`` / ``credential`` word (``api_key=``,
   ``"x-api-key": "``, ``API key provided: ``) when it has 8+ characters with a letter and a
   digit or a capital past its first character (``Authentication`` stays, base64 goes); the
   password of a URL's ``user:password@``.

Hosts that echo keys do it whole (an exception repr, a URL with ``?key=``) or masked as OpenAI
does (``sk-abc1****...****wxyz``: the first 6-8 characters and the last 4); both go, by rule 1
or 3 and by rule 2. Four characters alone (``...wxyz``) are not a secret and are kept.

What it leaves alone, on purpose: ids and numbers in ordinary positions (``req_...``,
``chatcmpl-...``, UUIDs, hex trace ids, model ids, token counts), and secrets shorter than
:data:`MIN_SECRET` (the demo's ``demo`` key), which would blank ordinary words.

It is meant for text that is rare on the hot path: failure messages (once per failed attempt),
log records other than access lines, the access line of a failed request. Never per successful
request or per stream chunk: a 500-character message takes ~30 µs (~50 µs when it holds an echo
to replace), a one-line one ~2 µs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

import orjson

PLACEHOLDER: Final = "[REDACTED]"
MIN_SECRET: Final = 8
"""Shorter configured secrets are ignored: redacting them would blank ordinary words."""
FRAGMENT: Final = 8
"""Characters of a configured secret that give a run of key characters away."""

_K = r"A-Za-z0-9_\-"
"""Key characters."""
_KM = _K + r"*"
"""Key characters and the mask hosts print instead of the hidden middle."""
_NB = rf"(?<![{_KM}])"
_V = _K + r".~+/"
"""Characters of a value after a key word or an auth scheme (base64, URL-safe tokens)."""

# CPython's re tries every alternative at every position, so one pattern with everything in it
# costs ~3x these four: each below starts at a key-run start (or a literal), and the last three
# run only when a cheap ``in`` test says they could match (measured on 500-character messages).
_SHAPES: Final = re.compile(
    _NB
    + "(?=[sftAe0-9a-fA-F])(?:"
    + "|".join(
        [
            # Prefixed API keys: OpenAI / SiliconFlow / OpenRouter sk-, Novita sk_, virtual
            # keys sk-glm-, Fireworks fw_, Together tgp_v1_. A digit or a mask in the run.
            rf"(?:sk|fw|tgp)[-_](?=[{_KM}.…]*[0-9*…])[{_KM}.…]{{9,}}[{_KM}…]",
            # Zhipu (Z.ai, BigModel): <32 hex id>.<16 secret>.
            r"[0-9a-fA-F]{32}\.[A-Za-z0-9]{16}(?![A-Za-z0-9])",
            # JWTs (the Zhipu SDK signs one from the key and sends it as the bearer).
            rf"eyJ[{_K}]{{8,}}\.eyJ[{_K}]{{8,}}\.[{_K}]*",
            # AWS access key ids; Google API keys.
            r"(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|ANPA)[A-Z0-9]{16}(?![A-Za-z0-9])",
            rf"AIza[{_K}]{{30,}}",
        ]
    )
    + ")"
)
_MASKED: Final = re.compile(rf"{_NB}(?:[{_K}]+\*{{4,}}[{_KM}]*|\*{{4,}}[{_K}][{_KM}]*)")
"""A masked key: four or more ``*`` next to key characters (``abcd****wxyz``, ``****wxyz``)."""
_WORDS = r"api[_\-]?key|key|token|secret|password|passwd|authorization|auth|signature|credential"
_HINTS: Final = ("key", "token", "secret", "passw", "auth", "signature", "credential", "bearer",
                 "basic")  # fmt: skip
_FILLER = r"provided|is|was|given|used|passed|supplied|received"
_LEADS: Final = re.compile(
    r"(?P<lead>(?<![A-Za-z0-9])(?:"
    # a key word (api_key, x-api-key, access_token) then "=", ":", quotes, or a filler word
    rf"""(?i:{_WORDS})s?(?:\\?["']?\s*[:=]\s*|\s+(?i:{_FILLER})\s*[:=]?\s*)(?:b?\\?["'])?"""
    # or an auth scheme
    r"|(?i:bearer|basic)\s+))"
    # a value of 8+ characters with a letter, and a digit or a capital past its start (base64)
    rf"(?=[{_V}]*[0-9]|[{_V}]+[A-Z])(?=[{_V}]*[A-Za-z])[{_V}]{{7,}}[{_K}~+/]=*"
)
_USERINFO: Final = re.compile(r"""(?P<lead>://[^\s/:@"'\\]*:)[^\s/@"'\\]+(?=@)""")
_RUN: Final = re.compile(rf"[{_KM}]{{{FRAGMENT},}}")


def _keep_lead(m: re.Match[str]) -> str:
    return m["lead"] + PLACEHOLDER


class Redactor:
    """Replaces secrets and credential-shaped strings in text; see the module docstring.

    ``secrets``: the values to hide (shorter than :data:`MIN_SECRET` ignored). Changed only by
    :meth:`learn` (a config reload adds the new config's secrets); calling it never raises.
    """

    __slots__ = ("_forms", "_grams", "secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: tuple[str, ...] = ()
        self._forms: tuple[str, ...] = ()
        self._grams: frozenset[str] = frozenset()
        self.learn(secrets)

    def learn(self, secrets: Iterable[str]) -> None:
        """Hide ``secrets`` too, from now on. Nothing is forgotten: text about a request that
        started on an older config may still carry one of its secrets."""
        new = {s for s in secrets if len(s) >= MIN_SECRET} - set(self.secrets)
        if not new and self.secrets:
            return
        kept = sorted({*self.secrets, *new}, key=lambda s: (-len(s), s))
        forms = set(kept)
        for s in kept:  # as it reads inside a JSON string (an access line)
            forms.add(orjson.dumps(s).decode()[1:-1])
        grams = frozenset(s[i : i + FRAGMENT] for s in kept for i in range(len(s) - FRAGMENT + 1))
        # Each attribute is replaced whole, so a call in progress sees a consistent set.
        self._forms = tuple(sorted(forms, key=lambda s: (-len(s), s)))
        self._grams = grams
        self.secrets = tuple(kept)

    def __call__(self, text: str) -> str:
        """``text`` with every secret and credential shape replaced by :data:`PLACEHOLDER`."""
        if not text:
            return text
        for form in self._forms:  # longest first
            if form in text:
                text = text.replace(form, PLACEHOLDER)
        text = _SHAPES.sub(PLACEHOLDER, text)
        if "****" in text:
            text = _MASKED.sub(PLACEHOLDER, text)
        lowered = text.lower()
        if any(hint in lowered for hint in _HINTS):
            text = _LEADS.sub(_keep_lead, text)
        if "://" in text and "@" in text:
            text = _USERINFO.sub(_keep_lead, text)
        if self._grams:
            text = _RUN.sub(self._fragment, text)
        return text

    def _fragment(self, m: re.Match[str]) -> str:
        run, grams = m[0], self._grams
        for i in range(len(run) - FRAGMENT + 1):
            if run[i : i + FRAGMENT] in grams:
                return PLACEHOLDER
        return run
