"""Plain-text tables for people: status, job summaries. No dependencies beyond the stdlib."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table with a header rule."""
    cells = [[str(h) for h in headers]] + [
        ["" if c is None else str(c) for c in row] for row in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_status(info: dict[str, Any]) -> str:
    """The broker's status answer as tables: workers, queues, counters."""
    out = [
        f"broker {info.get('version')} ({info.get('protocol')}) on {info.get('host')}, "
        f"up {info.get('uptime_s', 0):.1f}s; in flight: {info.get('in_flight', 0)}"
    ]
    workers = info.get("workers", [])
    out.append("")
    out.append(
        table(
            ["worker", "robots", "device", "state", "served", "errors", "p50 ms", "p99 ms"],
            [
                [
                    w["id"][:8],
                    ",".join(w["robots"]),
                    w["device"],
                    w["state"],
                    w["served"],
                    w["errors"],
                    w.get("p50_ms"),
                    w.get("p99_ms"),
                ]
                for w in workers
            ],
        )
        if workers
        else "no workers registered"
    )
    queues = info.get("queues", {})
    if queues:
        out.append("")
        out.append(table(["robot", "queued"], sorted(queues.items())))
    counters = {
        **info.get("counters", {}),
        **{f"error:{k}": v for k, v in info.get("errors", {}).items()},
    }
    counters.update({f"reject:{k}": v for k, v in info.get("rejects", {}).items()})
    if counters:
        out.append("")
        out.append(table(["counter", "value"], sorted(counters.items())))
    return "\n".join(out)
