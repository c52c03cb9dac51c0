"""Section 2 — zmq-ik against HTTP the way the seed servers do it.

HTTP side (`benchmarks._http_server`): FastAPI + uvicorn and Flask, each one process, taking
a multipart upload (scene + strokes YAML files, or a safetensors targets file) and returning
a safetensors body; python-requests client with a keep-alive session (HTTP's best case; the
seed client opens a new connection per request, shown once for the no-op). zmq-ik side: a
broker, one IK worker and one echo worker, `IKClient`. Both call the very same IK functions
(`zmq_ik.ik`), compiled before serving, so only the transport differs. Each run measures
every transport side by side; tables give medians over runs and ratios within runs.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from benchmarks import _data
from benchmarks._common import Config, Section, Table, log, median, pct, ratio
from benchmarks._harness import Procs, free_port
from benchmarks._sides import HttpSide, ZikSide, concurrent

OPS = {
    "noop": "no compute: 2-file upload → tiny reply (zmq-ik: same payload to echo worker)",
    "solve": "single-pose `solve` (1 bimanual pose)",
    "pair": "one stroke pair (16 poses × 6 offsets)",
    "pair_compute": "one stroke pair via `IKClient.compute`",
    "run_job": "100-stroke-pair job (9,600 poses)",
}


def http_missing() -> str | None:
    lacking = [
        m
        for m in ("fastapi", "uvicorn", "multipart", "requests")
        if not importlib.util.find_spec(m)
    ]
    if lacking:
        return f"benchmark dependencies missing: {', '.join(lacking)} (pip install 'zmq-ik[bench]')"
    return None


def run(cfg: Config) -> Section:
    section = Section("http", "2. zmq-ik vs HTTP (FastAPI + uvicorn, Flask), same IK function")
    missing = http_missing()
    if missing:
        section.skipped = missing
        return section
    ik_reason = _data.ik_missing()
    if ik_reason:
        section.skipped = f"IK rows skipped: {ik_reason}. Only the no-compute (transport) rows ran."
    with_flask = importlib.util.find_spec("flask") is not None
    buckets = cfg.pick(None, None, "16")  # tiny: a test worker's bucket (one program to load)
    n = {
        "noop": cfg.pick(500, 100, 10),
        "solve": cfg.pick(300, 60, 5),
        "pair": cfg.pick(100, 30, 3),
        "pair_compute": cfg.pick(100, 30, 3),
        "run_job": cfg.pick(1, 1, 0),
    }
    ops = ["noop"] if ik_reason else [op for op in OPS if n[op] > 0]
    job_pairs = 100
    ports = {"FastAPI": free_port(), "Flask": free_port()}
    sides: list[Any] = []
    with Procs() as procs:
        ep = procs.broker().endpoint
        procs.echo_worker(ep)
        ik_args = ["--no-ik"] if ik_reason else (["--buckets", buckets] if buckets else [])
        if not ik_reason:
            procs.ik_worker(ep, buckets=buckets)
        procs.module(
            "fastapi",
            "benchmarks._http_server",
            "fastapi",
            "--port",
            str(ports["FastAPI"]),
            *ik_args,
        )
        if with_flask:
            procs.module(
                "flask", "benchmarks._http_server", "flask", "--port", str(ports["Flask"]), *ik_args
            )
        else:
            del ports["Flask"]
        log(cfg, "  waiting for workers and HTTP servers (first start compiles the IK buckets)")
        procs.wait_workers(ep, 1, robot="echo")
        if not ik_reason:
            procs.wait_workers(ep, 1, robot="tatbot")
        for port in ports.values():
            procs.wait_http(port)
        try:
            sides = [ZikSide(ep, job_pairs)] + [HttpSide(k, p, job_pairs) for k, p in ports.items()]
            extra = HttpSide(
                "FastAPI, new connection per request", ports["FastAPI"], 1, session=False
            )
            names = [s.name for s in sides]
            # samples[op][side] = per run (p50 rt, p99 rt, p50 overhead)
            samples: dict[str, dict[str, list[tuple[float, float, float]]]] = {
                op: {s: [] for s in names} for op in ops
            }
            samples["noop"][extra.name] = []
            for side in [*sides, extra]:  # warm-up
                for op in ops if side is not extra else ["noop"]:
                    for _ in range(2 if op != "run_job" else 1):
                        getattr(side, op)()
            for r in range(cfg.runs):
                order = sides[r % len(sides) :] + sides[: r % len(sides)]
                for op in ops:
                    for side in order + ([extra] if op == "noop" else []):
                        if op == "pair_compute" and isinstance(side, HttpSide):
                            continue
                        rt, comp = _timed(getattr(side, op), n[op])
                        over = [a - b for a, b in zip(rt, comp, strict=True)]
                        samples[op][side.name].append((pct(rt, 50), pct(rt, 99), pct(over, 50)))
                log(cfg, f"  run {r + 1}/{cfg.runs} done")
        finally:
            for s in sides:
                s.close()
        # throughput with 4 concurrent clients (each a process)
        thr_op = "noop" if ik_reason else "pair"
        n_clients = cfg.pick(4, 4, 2)
        n_conc = cfg.pick(100 if thr_op == "pair" else 300, 25, 3)
        targets: dict[str, str | int] = {"zmq-ik": ep, **ports}
        conc: dict[str, list[float]] = {k: [] for k in targets}
        conc_p50: dict[str, list[float]] = {k: [] for k in targets}
        for _ in range(max(1, min(cfg.runs, 3))):
            for kind, target in targets.items():
                rate, lat = concurrent(kind, target, thr_op, n_clients, n_conc)
                conc[kind].append(rate)
                conc_p50[kind].append(pct(lat, 50))
        log(
            cfg,
            f"  {n_clients} clients: "
            + ", ".join(f"{k} {median(v):.0f}/s" for k, v in conc.items()),
        )
    _tables(
        cfg, section, ops, samples, names, extra.name, conc, conc_p50, thr_op, n_conc, n_clients
    )
    return section


def _timed(fn: Any, n: int) -> tuple[list[float], list[float]]:
    import time

    rt, comp = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        c = fn()
        rt.append((time.perf_counter() - t0) * 1000)
        comp.append(0.0 if c != c else c)
    return rt, comp


def _tables(
    cfg: Config,
    section: Section,
    ops: list[str],
    samples: dict[str, dict[str, list[tuple[float, float, float]]]],
    names: list[str],
    extra: str,
    conc: dict[str, list[float]],
    conc_p50: dict[str, list[float]],
    thr_op: str,
    n_conc: int,
    n_clients: int,
) -> None:
    http = names[1:]

    def med(op: str, side: str, k: int) -> float:
        return median([x[k] for x in samples[op].get(side, [])])

    def run_ratio(op: str, side: str, k: int, zik_op: str | None = None) -> float:
        a, b = samples[op].get(side, []), samples[zik_op or op][names[0]]
        return median([ratio(x[k], y[k]) for x, y in zip(a, b, strict=False)])

    lat = Table(
        "Latency, p50 (p99) ms",
        ["request", *names, *(f"{h} ÷ zmq-ik" for h in http)],
        note=f"Median over {cfg.runs} runs of each run's p50 and p99; ratios of p50s within "
        "each run, then the median. zmq-ik's one-pair row is one `strokebatch` request; "
        "`IKClient.compute` (which also packs and reassembles) has its own row.",
    )
    over = Table(
        "Transport overhead: round trip minus the server's own compute time, p50 ms",
        ["request", *names, *(f"{h} ÷ zmq-ik" for h in http)],
        note="Compute time as reported by the server (zmq-ik worker: `compute_ms` in the FINAL "
        "header, which also covers decoding and validating the request; HTTP: `X-Compute-Ms`, the "
        "IK call alone, so YAML/safetensors handling counts as HTTP overhead — the format is part "
        "of that transport).",
    )
    data: dict[str, Any] = {}
    for op in ops:
        zop = op
        if op == "pair_compute":
            row: list[Any] = [OPS[op], f"{med(op, names[0], 0):.2f} ({med(op, names[0], 1):.2f})"]
            row += [f"{med('pair', h, 0):.2f} ({med('pair', h, 1):.2f})" for h in http]
            row += [run_ratio("pair", h, 0, "pair_compute") for h in http]
            lat.rows.append(row)
            data[op] = {"zmq-ik": med(op, names[0], 0)}
            continue
        row = [OPS[op]] + [f"{med(op, s, 0):.2f} ({med(op, s, 1):.2f})" for s in names]
        row += [run_ratio(op, h, 0) for h in http]
        lat.rows.append(row)
        data[op] = {s: med(op, s, 0) for s in names}
        data[op]["ratio"] = {h: run_ratio(op, h, 0) for h in http}
        if op in ("noop", "solve", "pair"):
            orow: list[Any] = [OPS[zop]] + [med(op, s, 2) for s in names]
            orow += [run_ratio(op, h, 2) for h in http]
            over.rows.append(orow)
            data[op]["overhead"] = {s: med(op, s, 2) for s in names}
            data[op]["overhead_ratio"] = {h: run_ratio(op, h, 2) for h in http}
    if extra in samples["noop"]:
        value = f"{med('noop', extra, 0):.2f} ({med('noop', extra, 1):.2f})"
        lat.rows.append(
            ["no compute, FastAPI with a new connection per request (as the seed client)", "–"]
            + [value if h == "FastAPI" else "–" for h in http]
            + ["–"] * len(http)
        )
        data["noop"]["new_connection"] = med("noop", extra, 0)
    section.tables += [lat, over]
    thr = Table(
        f"Throughput with {n_clients} concurrent clients ({OPS[thr_op]})",
        ["transport", "requests/s", "p50 latency ms", "÷ zmq-ik requests/s"],
        note=f"{n_clients} client processes × {n_conc} requests each, started together; zmq-ik has one "
        "worker (the echo worker for the no-compute row, the IK worker otherwise; jobs are served one at a time, queued at the broker), each HTTP server is one "
        f"process (threads); median of {len(next(iter(conc.values())))} runs.",
    )
    zrate = median(conc["zmq-ik"])
    for kind in conc:
        thr.rows.append(
            [kind, median(conc[kind]), median(conc_p50[kind]), ratio(median(conc[kind]), zrate)]
        )
    section.tables.append(thr)
    data["concurrent"] = {k: median(v) for k, v in conc.items()}
    data["concurrent_op"] = thr_op
    section.data.update(data)
