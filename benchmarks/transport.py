"""Section 1 — the messaging floor: raw pyzmq one hop and two hops against the zmq-ik broker.

Parties, each its own process: the client (this process), a raw ROUTER echo (one hop); a
``zmq.proxy`` ROUTER/DEALER with a DEALER echo behind it (two hops, the floor any broker
pays); a zmq-ik broker with one echo worker (``zmq-ik worker --echo``), reached through
`IKClient.request` / `IKClient.exchange` (so protocol encoding and decoding are counted).
Each run measures the three side by side; tables give the median over runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import zmq

from benchmarks._common import (
    Config,
    Section,
    Table,
    log,
    median,
    pct,
    ratio,
    size_label,
    time_calls,
)
from benchmarks._harness import Procs
from zmq_ik.apps.serve import free_endpoint

SIZES = [64, 64 << 10, 1 << 20, 8 << 20]
SYSTEMS = ["one hop (raw)", "two hops (raw proxy)", "zmq-ik broker"]


def _counts(cfg: Config, size: int) -> tuple[int, int, int]:
    """(latency round trips, throughput requests, window) for one run at ``size``."""
    table = {
        64: ((2000, 6000, 32), (300, 1000, 32), (20, 60, 8)),
        64 << 10: ((1000, 2000, 16), (200, 400, 16), (20, 40, 4)),
        1 << 20: ((200, 300, 4), (40, 60, 4), (5, 8, 2)),
        8 << 20: ((30, 40, 4), (8, 12, 4), (3, 4, 2)),
    }[size]
    return cfg.pick(*table)


class RawClient:
    """A DEALER talking to a raw echo (directly, or through the proxy)."""

    def __init__(self, ctx: zmq.Context, endpoint: str) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, 10_000)
        self.sock.setsockopt(zmq.RCVHWM, 10_000)
        self.sock.connect(endpoint)

    def roundtrip(self, data: np.ndarray) -> int:
        self.sock.send(data, copy=False)
        return len(self.sock.recv(copy=False))

    def throughput(self, data: np.ndarray, n: int, window: int) -> float:
        sock = self.sock
        t0 = time.perf_counter()
        sent = 0
        for _ in range(min(window, n)):
            sock.send(data, copy=False)
            sent += 1
        for _ in range(n):
            sock.recv(copy=False)
            if sent < n:
                sock.send(data, copy=False)
                sent += 1
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        self.sock.close(0)


class ZikClient:
    """`IKClient` against a broker with an echo worker (robot ``echo``, operation ``echo``)."""

    def __init__(self, endpoint: str) -> None:
        from zmq_ik.client import IKClient

        self.client = IKClient(endpoint, timeout=30.0)

    def roundtrip(self, data: np.ndarray) -> int:
        return self.client.request("echo", "echo", None, {"data": data}).arrays["data"].nbytes

    def throughput(self, data: np.ndarray, n: int, window: int) -> float:
        from zmq_ik.client import Call

        def calls() -> Iterator[Call]:
            for _ in range(n):
                yield Call("echo", "echo", {}, {"data": data})

        t0 = time.perf_counter()
        done = sum(1 for _ in self.client.exchange(calls(), max_in_flight=window))
        return done / (time.perf_counter() - t0)

    def close(self) -> None:
        self.client.close()


def worker_scaling(
    cfg: Config, procs: Procs, endpoint: str, zik: ZikClient, workers: list[int]
) -> Table:
    """Tiny-request throughput through the broker with 1 and 2 echo workers."""
    n, window = cfg.pick((20_000, 64), (4000, 64), (100, 8))
    data = np.zeros(64, np.uint8)
    table = Table(
        "Broker throughput, tiny requests (64 B), by echo workers",
        ["echo workers", "req/s (median)", "req/s (best)", "client window"],
        note=f"One client process, {n:,} requests per run with {window} in flight, "
        f"{cfg.runs} runs.",
    )
    registered = 1
    for count in workers:
        while registered < count:
            procs.echo_worker(endpoint)
            registered += 1
        procs.wait_workers(endpoint, count, robot="echo")
        zik.throughput(data, min(n, 500), window)  # warm-up
        rates = [zik.throughput(data, n, window) for _ in range(cfg.runs)]
        table.rows.append([count, median(rates), max(rates), window])
        log(cfg, f"  broker throughput with {count} echo worker(s): {median(rates):,.0f} req/s")
    return table


def run(cfg: Config) -> Section:
    section = Section("transport", "1. Messaging floor: raw pyzmq vs the zmq-ik broker")
    sizes = cfg.pick(SIZES, SIZES, SIZES[:2])
    ctx = zmq.Context()
    one, front, back = (free_endpoint() for _ in range(3))
    clients: list[Any] = []
    try:
        with Procs() as procs:
            procs.module("router-echo", "benchmarks._raw", "router-echo", "--bind", one)
            procs.module(
                "proxy", "benchmarks._raw", "proxy", "--frontend", front, "--backend", back
            )
            procs.module("dealer-echo", "benchmarks._raw", "dealer-echo", "--connect", back)
            zik_ep = procs.broker().endpoint
            procs.echo_worker(zik_ep)
            procs.wait_workers(zik_ep, 1, robot="echo")
            clients = [RawClient(ctx, one), RawClient(ctx, front), ZikClient(zik_ep)]
            procs.check_alive()
            # results[size][system] = list of (p50, p99, throughput) per run
            results: dict[int, dict[str, list[tuple[float, float, float]]]] = {}
            for size in sizes:
                n_lat, n_thr, window = _counts(cfg, size)
                data = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
                for client in clients:  # warm-up, and a check that the echo is whole
                    for _ in range(max(3, n_lat // 10)):
                        assert client.roundtrip(data) == size
                    client.throughput(data, min(n_thr, 4 * window), window)
                per: dict[str, list[tuple[float, float, float]]] = {s: [] for s in SYSTEMS}
                for r in range(cfg.runs):
                    order = list(range(len(clients)))
                    order = order[r % 3 :] + order[: r % 3]  # rotate who goes first
                    for i in order:
                        client = clients[i]
                        lat = time_calls(lambda c=client, d=data: c.roundtrip(d), n_lat)
                        thr = client.throughput(data, n_thr, window)
                        per[SYSTEMS[i]].append((pct(lat, 50), pct(lat, 99), thr))
                results[size] = per
                log(
                    cfg,
                    f"  {size_label(size)}: "
                    + ", ".join(
                        f"{s} p50 {median([x[0] for x in v]):.3f} ms" for s, v in per.items()
                    ),
                )
            section.tables.append(_latency_table(cfg, results))
            section.tables.append(
                worker_scaling(cfg, procs, zik_ep, clients[2], cfg.pick([1, 2], [1, 2], [1]))
            )
    finally:
        for c in clients:
            c.close()
        ctx.destroy(linger=0)
    section.data["results"] = {
        size: {s: [list(t) for t in v] for s, v in per.items()} for size, per in results.items()
    }
    section.data["summary"] = _summary(results)
    scaling = section.tables[-1]
    section.data["throughput_by_workers"] = {row[0]: row[1] for row in scaling.rows}
    return section


def _summary(results: dict[int, dict[str, list[tuple[float, float, float]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size, per in results.items():
        two = per[SYSTEMS[1]]
        out[size] = {
            s: {
                "p50_ms": median([x[0] for x in v]),
                "p99_ms": median([x[1] for x in v]),
                "req_s": median([x[2] for x in v]),
                "p50_vs_two_hop": median([ratio(x[0], y[0]) for x, y in zip(v, two, strict=True)]),
            }
            for s, v in per.items()
        }
    return out


def _latency_table(
    cfg: Config, results: dict[int, dict[str, list[tuple[float, float, float]]]]
) -> Table:
    summary = _summary(results)
    table = Table(
        "Round-trip latency and throughput by payload (echo of the payload)",
        "payload|path|p50 ms|p99 ms|req/s (window)|MiB/s both ways|p50 ÷ two-hop p50".split("|"),
        note=f"Median over {cfg.runs} runs of each run's p50/p99/throughput; the ratio is taken "
        "within each run, then the median. Throughput keeps a window of requests in flight "
        "(32 for 64 B, 16 for 64 KiB, 4 for 1 and 8 MiB).",
    )
    for size, per in summary.items():
        for system, s in per.items():
            table.rows.append(
                [
                    size_label(size),
                    system,
                    s["p50_ms"],
                    s["p99_ms"],
                    s["req_s"],
                    s["req_s"] * size * 2 / (1 << 20),
                    s["p50_vs_two_hop"],
                ]
            )
    return table
