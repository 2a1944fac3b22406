"""``glm-gateway top``: the dashboard's live figures in a terminal (the only ``rich`` import).

Reads the same JSON as the page (``GET /dashboard/data``), with the master key when auth is on.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

BLOCKS = " ▁▂▃▄▅▆▇█"
STATE_STYLE = {"open": "bold red", "half_open": "yellow", "closed": "green"}


class TopError(Exception):
    """The data could not be read; the message says what to do."""


class KeyRefused(TopError):
    """The gateway refused the key (401/403): retrying will not help."""


def fetch(url: str, key: str | None, timeout: float = 5.0) -> dict[str, Any]:
    req = urllib.request.Request(url.rstrip("/") + "/dashboard/data")
    req.add_header("Accept", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise KeyRefused(
                f"{url} refused the key ({exc.code}): pass the master key with --key or "
                "GLM_GATEWAY_MASTER_KEY."
            ) from None
        raise TopError(f"{url} answered {exc.code} for /dashboard/data.") from None
    except (urllib.error.URLError, OSError) as exc:
        raise TopError(f"cannot reach {url}: {exc}") from None
    if not isinstance(data, dict):
        raise TopError(f"{url}/dashboard/data did not answer a JSON object.")
    return data


def sparkline(values: Sequence[float | None], width: int = 60) -> str:
    vals = [v or 0.0 for v in values][-width:]
    top = max(vals, default=0.0)
    if top <= 0:
        return BLOCKS[1] * len(vals)
    return "".join(BLOCKS[max(1, round(v / top * (len(BLOCKS) - 1)))] for v in vals)


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.1f} ms"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _num(v: float | None) -> str:
    if v is None:
        return "–"
    if abs(v) >= 10_000:
        return f"{v / 1000:.1f}k"
    return f"{v:.0f}" if float(v).is_integer() or abs(v) >= 100 else f"{v:.2f}"


def _usd(v: float | None) -> str:
    return "–" if v is None else f"${v:.4f}" if v < 1 else f"${v:.2f}"


def _headline(d: dict[str, Any]) -> Table:
    m = d["summary"]
    opened = sum(1 for c in d["circuits"] if c["state"] == "open")
    t = Table(box=None, expand=True, pad_edge=False)
    cols = [
        ("req/s", _num(m["rps"])),
        ("p50", _ms(m["p50_ms"])),
        ("p95", _ms(m["p95_ms"])),
        ("overhead p95", _ms(m["overhead_p95_ms"])),
        ("TTFT p95", _ms(m["ttft_p95_ms"])),
        ("errors", _pct(m["error_rate"])),
        ("fallbacks", _pct(m["fallback_rate"])),
        ("tokens/min", _num(m["tokens_in"] + m["tokens_out"])),
        ("cost/min", _usd(m["cost_usd"])),
        ("open circuits", str(opened)),
    ]
    for name, _ in cols:
        t.add_column(name, justify="right", style="bold")
    t.add_row(*(v for _, v in cols))
    return t


def _trends(d: dict[str, Any]) -> Table:
    s = d["series"]
    t = Table(box=None, show_header=False, pad_edge=False)
    t.add_column(style="dim", width=14)
    t.add_column()
    t.add_column(justify="right", style="dim")
    t.add_row("requests/s", sparkline(s["rps"]), f"max {_num(max(s['rps'], default=0))}")
    p95 = [v for v in s["p95_ms"] if v is not None]
    t.add_row("p95 latency", sparkline(s["p95_ms"]), f"max {_ms(max(p95, default=None))}")
    worst = max(s["error_rate"], default=0.0)
    t.add_row("5xx rate", sparkline(s["error_rate"]), f"max {_pct(worst)}")
    t.add_row("fallback rate", sparkline(s["fallback_rate"]), "")
    return t


def _breakdown(d: dict[str, Any], dim: str) -> Table:
    t = Table(title=f"by {dim} (since start)", expand=True, title_style="bold")
    for col in (dim, "requests", "tokens in", "tokens out", "cost"):
        t.add_column(col, justify="left" if col == dim else "right")
    for r in d["totals"]["by_" + dim][:10]:
        t.add_row(
            str(r[dim]),
            _num(r.get("requests", 0)),
            _num(r.get("tokens_in", 0)),
            _num(r.get("tokens_out", 0)),
            _usd(r.get("cost_usd", 0.0)),
        )
    return t


def _circuits(d: dict[str, Any], limit: int = 12) -> Table:
    rows = [c for c in d["circuits"] if c["state"] != "closed" or c["requests"]][:limit]
    t = Table(title="circuits (not closed, or with traffic)", expand=True, title_style="bold")
    for col in ("deployment", "state", "consec. fails", "latency", "attempts", "failures", "last"):
        t.add_column(col, justify="left" if col in ("deployment", "state", "last") else "right")
    for c in rows:
        t.add_row(
            c["deployment"],
            Text(c["state"], style=STATE_STYLE.get(c["state"], "")),
            str(c["consecutive_failures"]),
            _ms(c["latency_ms"]),
            _num(c["requests"]),
            _num(c["failures"]),
            c["last_failure"] or "",
        )
    return t


def render(d: dict[str, Any], source: str = "") -> RenderableType:
    """One frame of the view from the dashboard JSON."""
    st = d["state"]
    state = st["backend"] + (" degraded" if st.get("degraded") else "")
    title = (
        f"glm-gateway {d.get('version', '')}  {source}  up {d['uptime_s']:.0f}s  state {state}  "
        f"in flight {d['in_flight']}  loop lag {_ms(d['loop_lag_ms'])}"
    )
    summary = Panel(
        Group(_headline(d), Text(""), _trends(d)),
        title=title,
        subtitle=f"last {d['summary_s']}s · trends {d['window_s'] // 60} min",
    )
    tables = Table.grid(expand=True)
    tables.add_column(ratio=1)
    tables.add_column(ratio=1)
    tables.add_row(_breakdown(d, "variant"), _breakdown(d, "provider"))
    return Group(summary, tables, _circuits(d))


def run(
    url: str, key: str | None, interval: float, once: bool, console: Console | None = None
) -> int:
    """Print one frame (``once``) or refresh until Ctrl-C; raises TopError (``once``) or
    KeyRefused (live) when the data cannot be read."""
    console = console or Console()
    if once:
        console.print(render(fetch(url, key), url))
        return 0
    with Live(console=console, auto_refresh=False, screen=False) as live:
        while True:
            try:
                live.update(render(fetch(url, key), url), refresh=True)
            except KeyRefused:
                raise
            except TopError as exc:
                live.update(Text(f"{exc} (retrying)", style="red"), refresh=True)
            time.sleep(interval)
