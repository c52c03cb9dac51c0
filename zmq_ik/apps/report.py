"""Plain-text reports for people: `ping` and `status` answers (of one broker or several) as
lines and tables, and `fk` answers as a table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from zmq_ik.errors import IKError, IKTimeout, InputError, NoBroker
from zmq_ik.model import EEPoses


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


def format_ping(endpoint: str, info: dict[str, Any], rtts: Sequence[float]) -> str:
    """`zmq-ik ping`'s closing lines: the broker, round-trip times, one line per worker."""
    rtts = sorted(rtts)
    lines = [
        f"broker {info.get('version')} ({info.get('protocol')}) at {endpoint}, "
        f"up {info.get('uptime_s', 0):.1f}s; rtt min/median/max = "
        f"{rtts[0]:.3f}/{rtts[len(rtts) // 2]:.3f}/{rtts[-1]:.3f} ms"
    ]
    workers, warming = info.get("workers", []), info.get("warming", [])
    lines.append(worker_counts(info))
    lines += [
        f"  {w['id']}  {w['state']:<5} {','.join(w['robots']):<20} {w['device']}  "
        f"served={w['served']}" + (f" pauses={w['pauses']}" if w.get("pauses") else "")
        for w in workers
    ]
    lines += [
        f"  {w['id']}  warming {','.join(w['robots']):<20} {warm_progress(w)}, on "
        f"{w.get('host')} pid {w.get('pid')}"
        for w in warming
    ]
    return "\n".join(lines)


def warm_progress(worker: dict[str, Any]) -> str:
    """How far a warming worker is: ``bucket 3/8, 41 s`` (``41 s`` before any bucket)."""
    p = worker.get("progress") or {}
    elapsed = f"{p.get('elapsed_s', 0):.0f} s"
    return f"bucket {p.get('done', 0)}/{p['total']}, {elapsed}" if p.get("total") else elapsed


def worker_counts(info: dict[str, Any], shown: int = 3) -> str:
    """``1 ready, 1 warming (tatbot: bucket 3/8, 41 s)``: registered workers, and those still
    warming up (docs/protocol.md 4.11) with their robots and progress (the first ``shown``)."""
    ready = info.get("workers_total", len(info.get("workers", [])))
    warming = info.get("warming", [])
    text = f"{ready} ready, {info.get('warming_total', len(warming))} warming"
    if warming:
        some = [f"{','.join(w['robots'])}: {warm_progress(w)}" for w in warming[:shown]]
        text += f" ({'; '.join(some)}{'; ...' if len(warming) > shown else ''})"
    listed = len(info.get("workers", [])) + len(warming)
    unlisted = ready + info.get("warming_total", len(warming)) - listed
    return text + (f", {unlisted} not listed" if unlisted > 0 else "")


def format_status(info: dict[str, Any]) -> str:
    """The broker's status answer as tables: workers, queues, counters."""
    out = [
        f"broker {info.get('version')} ({info.get('protocol')}) on {info.get('host')}, "
        f"up {info.get('uptime_s', 0):.1f}s; in flight: {info.get('in_flight', 0)}"
    ]
    workers = info.get("workers", [])
    out.append(worker_counts(info))
    out.append("")
    out.append(
        table(
            ["worker", "robots", "device", "state", "served", "errors", "p50 ms", "p99 ms"],
            [
                [
                    w["id"],  # in full: the id `status --json` and the logs show
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
    warming = info.get("warming", [])
    if warming:
        out.append("")
        rows = [
            [w["id"], ",".join(w["robots"]), warm_progress(w), w.get("host"), w.get("pid")]
            for w in warming
        ]
        out.append(table(["warming", "robots", "progress", "host", "pid"], rows))
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


def ask(client: Any, question: str) -> dict[str, Any]:
    """``client.ping()`` or ``client.status()`` of a client with ``retries=0``; no answer is
    `IKTimeout` in the real numbers (the client's own message counts its grace period in)."""
    try:
        return dict(getattr(client, question)())
    except NoBroker:  # its message says why (and "within 2s", as ping's default)
        raise
    except IKTimeout as e:
        why = f": {e.reason}" if e.reason else ""
        raise IKTimeout(
            f"no answer from {client.endpoint} within {client.timeout:g}s{why}", e.reason
        ) from e


def ping_lines(client: Any, count: int, as_json: bool, pause: float = 0.2) -> Iterator[str]:
    """`zmq-ik ping`: a line per answer, then the summary (or the last answer as JSON)."""
    rtts, info = [], {}
    for i in range(count):
        time.sleep(pause if i else 0)
        info = ask(client, "ping")
        rtts.append(info["rtt_ms"])
        if not as_json:
            yield f"reply from {client.endpoint}: seq={i} time={info['rtt_ms']:.3f} ms"
    yield (
        json.dumps(info, indent=2, default=str)
        if as_json
        else format_ping(client.endpoint, info, rtts)
    )


def status_texts(client: Any, watch: bool, as_json: bool, every: float = 1.0) -> Iterator[str]:
    """`zmq-ik status`: the answer as tables (or JSON), every ``every`` s with ``watch``."""
    while True:
        info = ask(client, "status")
        yield json.dumps(info, default=str) if as_json else format_status(info)
        if not watch:
            return
        time.sleep(every)


def ping_brokers(
    endpoints: Sequence[str], count: int, as_json: bool, connect: Callable[[str], Any]
) -> Iterator[tuple[str, bool]]:
    """`zmq-ik ping` of each broker on its own (a client given several would fail over):
    ``(text, to_stderr)`` pairs, with ``--json`` one document (a broker's answer, or each
    broker's by endpoint). ``connect(endpoint)``: a client (a context manager, ``retries=0``).
    One broker that does not answer is its `IKTimeout`; of several, an `IKError` at the end."""
    silent, answers = [], {}
    for ep in endpoints:
        with connect(ep) as client:
            try:
                for line in ping_lines(client, count, as_json):
                    if as_json:
                        answers[ep] = json.loads(line)
                    else:
                        yield line, False
            except IKTimeout as e:
                if len(endpoints) == 1:
                    raise
                silent.append(ep)
                answers[ep] = {"error": str(e)}
                if not as_json:
                    yield str(e), True
    if as_json:
        one = answers[endpoints[0]] if len(endpoints) == 1 else answers
        yield json.dumps(one, indent=2, default=str), False
    if silent:
        raise IKError(f"{len(silent)} of {len(endpoints)} brokers did not answer")


def status_screens(
    endpoints: Sequence[str], watch: bool, as_json: bool, connect: Callable[[str], Any]
) -> Iterator[list[str]]:
    """`zmq-ik status` of each broker: a screen (its lines) per refresh, each broker's text
    headed by its endpoint when there are several. ``connect(endpoint)``: a client; all are
    closed when the screens end."""
    clients = [connect(ep) for ep in endpoints]
    try:
        views = [status_texts(c, watch, as_json) for c in clients]
        while True:
            texts = [next(v, None) for v in views]
            if texts[0] is None:
                return
            screen = []
            for ep, text in zip(endpoints, texts, strict=True):
                if len(endpoints) > 1 and not as_json:
                    screen.append(f"== {ep}")
                screen.append(str(text))
            yield screen
    finally:
        for c in clients:
            c.close()


def parse_joint_vectors(texts: Sequence[str]) -> list[list[float]]:
    """``Q1,Q2,...`` arguments (one joint vector each) → lists of numbers; the values'
    checks (finite, bounded, as many as the robot's joints) are `IKClient.fk`'s."""
    vectors = []
    for text in texts:
        try:
            vectors.append([float(v) for v in text.split(",")])
        except ValueError:
            raise InputError(
                f"joints: expected comma-separated numbers Q1,Q2,..., got {text!r}", "joints"
            ) from None
    if len({len(v) for v in vectors}) > 1:
        raise InputError("joints: the vectors have different lengths", "joints")
    return vectors


def format_fk(poses: EEPoses) -> str:
    """`zmq-ik fk`'s table: one row per joint vector and end effector."""
    rows = [
        [i, link, *(f"{v:.6f}" for v in poses.pos[i, k]), *(f"{v:.6f}" for v in poses.wxyz[i, k])]
        for i in range(len(poses))
        for k, link in enumerate(poses.ee_links)
    ]
    headers = ["pose", "ee_link", "x m", "y m", "z m", "qw", "qx", "qy", "qz"]
    return table(headers, rows)


def fk_text(
    client: Any,
    robot: str,
    joints: Sequence[Sequence[float]],
    ee_links: Sequence[str] | None,
    as_json: bool,
) -> str:
    """`zmq-ik fk`: the end-effector poses of the joint vectors ``joints`` (`format_fk`'s
    table, or JSON: ``ee_links``, ``pos`` and ``wxyz`` as nested lists)."""
    poses = client.fk(robot, joints, ee_links or None)
    if not as_json:
        return format_fk(poses)
    doc = {
        "robot": robot,
        "ee_links": list(poses.ee_links),
        "pos": poses.pos.tolist(),
        "wxyz": poses.wxyz.tolist(),
    }
    return json.dumps(doc, indent=2)
