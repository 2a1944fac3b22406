"""``glm-gateway keys``: create, list, show and revoke virtual keys.

With a database configured (``--database-url``, ``$GLM_GATEWAY_DATABASE_URL`` or
``database.url``) and no ``--url``, keys are managed in PostgreSQL directly
(:mod:`gateway.cli.records_cmds`); running gateways pick the change up within
``database.key_sync_s``. Otherwise it talks to a running gateway's admin API (``--url``,
default ``$GLM_GATEWAY_URL`` or ``http://127.0.0.1:8080``) with the master key
(``--master-key`` or ``$GLM_GATEWAY_MASTER_KEY``), so it works the same with the memory backend
(keys live in that process) and with Redis (any replica will do).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any

from gateway.catalogue.schema import BUDGET_PERIODS, CAPABILITIES
from gateway.cli.records_cmds import database_arg, keys_in_database
from gateway.errors import GatewayError

DEFAULT_URL = "http://127.0.0.1:8080"


class AdminError(Exception):
    """The admin API refused or could not be reached; the message says why."""


def _csv(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def add_keys_parser(sub: Any) -> None:
    k = sub.add_parser(
        "keys",
        help="manage virtual API keys: in PostgreSQL when a database is configured, else on a "
        "running gateway (admin API)",
    )
    k.add_argument(
        "--url",
        default=None,
        help=f"a running gateway's base URL: use its admin API (default without a database: "
        f"$GLM_GATEWAY_URL, else {DEFAULT_URL})",
    )
    k.add_argument("--config", metavar="DIR", help="config directory (database.url, key defaults)")
    database_arg(k)
    k.add_argument("--master-key", default=None, help="default: $GLM_GATEWAY_MASTER_KEY")
    ks = k.add_subparsers(dest="keys_command", required=True)
    c = ks.add_parser("create", help="create a key; prints it once")
    c.add_argument("--name", required=True)
    c.add_argument("--variants", type=_csv, help="allowed variant ids, comma-separated")
    c.add_argument(
        "--capabilities", type=_csv, help=f"allowed capabilities: {', '.join(CAPABILITIES)}"
    )
    c.add_argument(
        "--surfaces", type=_csv, help="provider surfaces it may use, in order (e.g. coding,api)"
    )
    c.add_argument("--rpm", type=int, help="requests per minute")
    c.add_argument("--tpm", type=int, help="tokens per minute")
    c.add_argument(
        "--max-in-flight", type=int, help="requests of this key running at once, across replicas"
    )
    c.add_argument("--budget", type=float, help="USD per budget period")
    c.add_argument("--period", choices=BUDGET_PERIODS, help="budget period (default: month)")
    c.add_argument(
        "--downgrade",
        action="store_true",
        default=None,
        help="over budget: answer from a cheaper capable variant instead of refusing",
    )
    ks.add_parser("list", help="every key with its spend this period")
    for name in ("show", "revoke"):
        one = ks.add_parser(name, help=f"{name} one key")
        one.add_argument("key_id")
    k.set_defaults(func=cmd_keys)


def cmd_keys(args: argparse.Namespace) -> int:
    if args.url is None and not os.environ.get("GLM_GATEWAY_URL"):
        try:
            out = keys_in_database(args, _spec(args))
        except GatewayError as exc:
            print(f"glm-gateway keys: {exc.message}", file=sys.stderr)
            return 1
        if out is not None:
            return _print(args, out)
    url = (args.url or os.environ.get("GLM_GATEWAY_URL") or DEFAULT_URL).rstrip("/")
    master = args.master_key or os.environ.get("GLM_GATEWAY_MASTER_KEY")
    if not master:
        print("glm-gateway keys: give --master-key or set GLM_GATEWAY_MASTER_KEY", file=sys.stderr)
        return 2
    try:
        out = _run(args, url, master)
    except AdminError as exc:
        print(f"glm-gateway keys: {exc}", file=sys.stderr)
        return 1
    return _print(args, out)


def _print(args: argparse.Namespace, out: dict[str, Any]) -> int:
    if args.keys_command == "create":
        print(f"key: {out['key']}  (shown once: store it now)", file=sys.stderr)
    print(json.dumps(out, indent=2))
    return 0


def _run(args: argparse.Namespace, url: str, master: str) -> dict[str, Any]:
    cmd = args.keys_command
    if cmd == "create":
        return call("POST", f"{url}/admin/keys", master, _spec(args))
    if cmd == "list":
        return call("GET", f"{url}/admin/keys", master)
    method = "DELETE" if cmd == "revoke" else "GET"
    return call(method, f"{url}/admin/keys/{args.key_id}", master)


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    """``create``'s flags as a key spec (the unset ones left out); {} for other commands."""
    if args.keys_command != "create":
        return {}
    spec = {
        "name": args.name,
        "allowed_variants": args.variants,
        "allowed_capabilities": args.capabilities,
        "rpm": args.rpm,
        "tpm": args.tpm,
        "budget_usd": args.budget,
        "budget_period": args.period,
        "downgrade": args.downgrade,
        "max_in_flight": args.max_in_flight,
        "surfaces": args.surfaces,
    }
    return {k: v for k, v in spec.items() if v is not None}


def call(method: str, url: str, master: str, body: Any = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {master}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise AdminError(f"{method} {url}: HTTP {exc.code}: {message}") from None
    except OSError as exc:
        raise AdminError(f"{method} {url}: {exc}") from None
