"""Issue #13 measurements: broker stall, rogue READY peers, memory held by queued requests.

    python -m benchmarks.hardening stall              # SIGSTOP the broker 5 s under load
    python -m benchmarks.hardening rogue              # echo throughput with rogue READY peers
    python -m benchmarks.hardening memory             # broker RSS with 30 x 64 MiB queued
    python -m benchmarks.hardening unread             # a client that never reads 2,000 x 1 MiB
    python -m benchmarks.hardening rolling            # restart workers one by one under load
* ``rolling`` (#25): broker + 2 echo workers, ``--clients`` `EchoLoad` threads
  (``timeout=5``, ``retries=2``); ``--rounds`` times, one worker (in turn) gets SIGTERM, a
  new one is started once it exited, and the next round waits until both are registered
  plus ``--gap`` s. Prints answered / errors / wrong and the longest request.

Not part of ``python -m benchmarks``: each run prints a markdown table and exits.

* ``stall``: broker + 2 echo workers, ``--clients`` client threads (IKClient ``timeout=3``,
  ``retries=4``) sending back-to-back ``sleep`` requests; the broker is frozen with SIGSTOP
  for ``--stall`` seconds, then resumed. Every FINAL/ERROR reaching a client socket is
  counted per request id (so a duplicate shows even though IKClient drops it).
* ``rogue``: echo throughput (``--clients`` threads, 8 in flight each) alone, then with
  ``--rogues`` peers that register with READY and keep heartbeating: first with
  ``--names`` robot names each (over the limit: refused since #13), then at the limits
  (64 names of 128 bytes, a 256-character device). Also: does ``ping`` answer?
* ``memory``: one echo worker kept busy by a long ``sleep``; a raw DEALER sends
  ``--count`` requests of ``--mib`` MiB with long deadlines; broker RSS (VmRSS) is sampled
  after they arrived, after the sender left, and after their deadlines passed.
* ``unread`` (#25.3): one echo worker; ``--clients`` raw DEALERs that never read (RCVHWM 1,
  64 KiB RCVBUF: their own process takes almost nothing off the broker) send ``--count``
  echo requests of ``--mib`` MiB in turn, one every ``--pace`` s, while an `IKClient` that
  reads makes echo calls; broker RSS is sampled throughout (peak), then 1 s and 3 s after
  the slow clients closed their sockets. Prints what the slow client was answered, the reader's calls
  and the broker's ``unread_bytes`` / ``replies_dropped_unread``.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq

from benchmarks._harness import CountingClient, EchoLoad, Procs
from zmq_ik.client import IKClient
from zmq_ik.errors import IKError, ProtocolError, RemoteError
from zmq_ik.protocol import (
    Command,
    Disconnect,
    Reply,
    decode_error,
    encode_payload,
    heartbeat_frames,
    new_routing_id,
    parse_message,
    ready_frames,
    request_frames,
)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _status(endpoint: str) -> dict[str, Any]:
    with IKClient(endpoint, timeout=2.0, retries=1) as c:
        return c.status()


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------- stall


def stall(args: argparse.Namespace) -> None:
    with Procs() as procs:
        broker = procs.broker()
        endpoint = broker.endpoint
        for _ in range(2):
            procs.echo_worker(endpoint)
        procs.wait_workers(endpoint, 2)
        stop = threading.Event()
        lock = threading.Lock()
        ok = [0]
        errors: Counter[str] = Counter()
        dups: Counter[int] = Counter()

        def run(c: int) -> None:
            client = CountingClient(endpoint, timeout=3.0, retries=4)
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    seconds = round(0.01 * (1 + (c + i) % 3), 3)
                    try:
                        got = client.request("echo", "sleep", {"seconds": seconds})
                    except RemoteError as e:
                        with lock:
                            errors[e.code] += 1
                        continue
                    except IKError as e:
                        with lock:
                            errors[type(e).__name__] += 1
                        continue
                    with lock:
                        if got.header.get("slept") == seconds:
                            ok[0] += 1
                        else:
                            errors["wrong answer"] += 1
                client.drain(1.0)
                with lock:
                    for n in client.duplicates().values():
                        dups[n] += 1
            finally:
                client.close()

        threads = [threading.Thread(target=run, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        before = ok[0]
        broker.send_signal(signal.SIGSTOP)
        time.sleep(args.stall)
        broker.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        while ok[0] <= before and time.monotonic() - t_cont < 30:
            time.sleep(0.01)
        flowing = time.monotonic() - t_cont
        time.sleep(args.after)
        stop.set()
        for t in threads:
            t.join(60)
        counters = _status(endpoint)["counters"]
    print(f"\nbroker SIGSTOP {args.stall:.1f}s, {args.clients} clients (timeout 3 s, retries 4)\n")
    keys = ["workers_lost", "workers_unreachable", "stalls", "duplicate_requests", "retries"]
    print(
        _table(
            ["answered", "errors", "ids answered twice+", "first answer after SIGCONT", *keys],
            [
                [
                    ok[0],
                    dict(errors) or "none",
                    sum(dups.values()),
                    f"{flowing:.2f} s",
                    *(counters.get(k, 0) for k in keys),
                ]
            ],
        )
    )


# --------------------------------------------------------------------------- rogue


class Rogues(threading.Thread):
    """``n`` peers that say READY with a big header and keep heartbeating (re-READY when told)."""

    def __init__(self, endpoint: str, n: int, info: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.endpoint, self.n, self.frames = endpoint, n, ready_frames(info)
        self.stop = threading.Event()
        self.refused: Counter[str] = Counter()

    def run(self) -> None:
        ctx = zmq.Context()
        socks = []
        for _ in range(self.n):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.ROUTING_ID, new_routing_id())
            s.connect(self.endpoint)
            s.send_multipart(self.frames)
            socks.append(s)
        poller = zmq.Poller()
        for s in socks:
            poller.register(s, zmq.POLLIN)
        last = time.monotonic()
        try:
            while not self.stop.is_set():
                for s, _ in poller.poll(50):
                    try:
                        msg = parse_message(s.recv_multipart())
                    except ProtocolError:
                        continue
                    if isinstance(msg, Disconnect):
                        s.send_multipart(self.frames)
                    elif isinstance(msg, Reply) and msg.command is Command.ERROR:
                        self.refused[decode_error(msg.payload)[0]] += 1
                if time.monotonic() - last >= 0.25:
                    last = time.monotonic()
                    for s in socks:
                        s.send_multipart(heartbeat_frames())
        finally:
            ctx.destroy(linger=0)


def _throughput(endpoint: str, clients: int, seconds: float) -> tuple[float, Counter[str]]:
    stop = threading.Event()
    done = [0]
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    arr = np.arange(16, dtype=np.float32)

    def run() -> None:
        from zmq_ik.client import Call

        with IKClient(endpoint, timeout=5.0, retries=0) as c:
            calls = (Call("echo", "echo", {}, {"x": arr}) for _ in iter(stop.is_set, True))
            n = 0
            try:
                for _ in c.exchange(calls, max_in_flight=8):
                    n += 1
            except IKError as e:
                with lock:
                    errors[type(e).__name__] += 1
            with lock:
                done[0] += n

    threads = [threading.Thread(target=run) for _ in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    return done[0] / (time.monotonic() - t0), errors


def _ping(endpoint: str) -> str:
    try:
        with IKClient(endpoint, timeout=3.0, retries=0) as c:
            t0 = time.monotonic()
            info = c.ping()
            ms = (time.monotonic() - t0) * 1000
        listed = len(info["workers"])
        return f"ok {ms:.0f} ms, {info.get('workers_total', listed)} workers ({listed} listed)"
    except RemoteError as e:
        return f"ERROR {e.code}"
    except IKError as e:
        return f"{type(e).__name__}"


def rogue(args: argparse.Namespace) -> None:
    over = {
        "robots": [f"r{i}" for i in range(args.names)],
        "device": "cpu",
    }
    at_limit = {
        "robots": [f"{i:03d}".ljust(128, "r") for i in range(64)],
        "device": "d" * 256,
        "host": "h" * 256,
    }
    rows = []
    with Procs() as procs:
        endpoint = procs.broker().endpoint
        for _ in range(2):
            procs.echo_worker(endpoint)
        procs.wait_workers(endpoint, 2)
        _throughput(endpoint, args.clients, 1.0)  # warm-up
        rate, errs = _throughput(endpoint, args.clients, args.seconds)
        rows.append(["none", f"{rate:,.0f}", dict(errs) or "none", _ping(endpoint), "-"])
        for label, info in (
            (f"{args.rogues} x {args.names:,} robot names", over),
            (f"{args.rogues} at the limits (64 x 128 B names, 256-char device)", at_limit),
        ):
            r = Rogues(endpoint, args.rogues, info)
            r.start()
            time.sleep(1.0)
            rate, errs = _throughput(endpoint, args.clients, args.seconds)
            rows.append(
                [
                    label,
                    f"{rate:,.0f}",
                    dict(errs) or "none",
                    _ping(endpoint),
                    dict(r.refused) or "none",
                ]
            )
            r.stop.set()
            r.join(10)
            time.sleep(1.5)  # the broker forgets them (silent)
    print(f"\necho throughput, {args.clients} client threads x 8 in flight, {args.seconds:.0f} s\n")
    print(_table(["rogue READY peers", "req/s", "client errors", "ping", "READYs refused"], rows))


# --------------------------------------------------------------------------- memory


def memory(args: argparse.Namespace) -> None:
    rows = []
    with Procs() as procs:
        broker = procs.broker(*args.broker_arg)
        endpoint = broker.endpoint
        procs.echo_worker(endpoint)
        procs.wait_workers(endpoint, 1)
        rows.append(["idle", f"{rss_mib(broker.pid):,.0f}"])
        ctx = zmq.Context()
        busy = ctx.socket(zmq.DEALER)
        busy.setsockopt(zmq.LINGER, 0)
        busy.connect(endpoint)
        busy.send_multipart(
            request_frames(b"busy", "echo", "sleep", 120_000, encode_payload({"seconds": 60}))
        )
        time.sleep(0.5)
        sender = ctx.socket(zmq.DEALER)
        sender.setsockopt(zmq.LINGER, 0)
        sender.setsockopt(zmq.SNDHWM, 0)
        sender.connect(endpoint)
        blob = np.zeros(args.mib * 1024 * 1024, np.uint8)
        payload = encode_payload({}, {"blob": blob})
        t0 = time.monotonic()
        for i in range(args.count):
            frames = request_frames(
                i.to_bytes(4, "big"), "echo", "echo", int(args.deadline * 1000), payload
            )
            sender.send_multipart(frames, copy=False)
        answers: Counter[str] = Counter()
        seen = 0
        peak = 0.0
        # Wait until the broker has read everything (RSS stops growing, all refusals back).
        stable_since = time.monotonic()
        last = rss_mib(broker.pid)
        while time.monotonic() - stable_since < 2.0 and time.monotonic() - t0 < 60:
            if sender.poll(100):
                msg = parse_message(sender.recv_multipart())
                if isinstance(msg, Reply):
                    answers[
                        decode_error(msg.payload)[0] if msg.command is Command.ERROR else "FINAL"
                    ] += 1
                    seen += 1
            now_rss = rss_mib(broker.pid)
            peak = max(peak, now_rss)
            if abs(now_rss - last) > 1:
                stable_since = time.monotonic()
            last = now_rss
        st = _status(endpoint)
        rows.append(
            [
                f"{args.count} x {args.mib} MiB sent (open jobs {st['open_jobs']}, "
                f"answers {dict(answers) or 'none'})",
                f"{rss_mib(broker.pid):,.0f} (peak {peak:,.0f})",
            ]
        )
        sender.close(0)
        time.sleep(1.0)
        rows.append(["1 s after the sender left", f"{rss_mib(broker.pid):,.0f}"])
        end = t0 + args.deadline + 30
        while (st := _status(endpoint))["open_jobs"] > 1 and time.monotonic() < end:
            time.sleep(0.5)  # only the busy worker's job left: every queued one has expired
        time.sleep(0.5)
        rows.append(
            [
                f"after the deadlines ({args.deadline:.0f} s; open jobs {st['open_jobs']})",
                f"{rss_mib(broker.pid):,.0f}",
            ]
        )
        busy.close(0)
        ctx.destroy(linger=0)
    print(f"\nbroker RSS (MiB), one busy echo worker, {args.count} x {args.mib} MiB requests\n")
    print(_table(["when", "broker RSS MiB"], rows))


def unread(args: argparse.Namespace) -> None:
    rows = []
    with Procs() as procs:
        broker = procs.broker(*args.broker_arg)
        endpoint = broker.endpoint
        procs.echo_worker(endpoint)
        procs.wait_workers(endpoint, 1)
        pid = broker.pid
        rows.append(["idle", f"{rss_mib(pid):,.0f}"])
        ctx = zmq.Context()
        slows = [ctx.socket(zmq.DEALER) for _ in range(args.clients)]
        for slow in slows:
            slow.setsockopt(zmq.LINGER, 0)
            slow.setsockopt(zmq.SNDHWM, 0)
            slow.setsockopt(zmq.RCVHWM, 1)
            slow.setsockopt(zmq.RCVBUF, 64 * 1024)
            slow.connect(endpoint)
        payload = encode_payload({}, {"blob": np.zeros(args.mib * 1024 * 1024, np.uint8)})
        peak = rss_mib(pid)
        calls: Counter[str] = Counter()
        with IKClient(endpoint, timeout=10.0, retries=0) as reader:
            next_call = time.monotonic()
            for i in range(args.count):
                frames = request_frames(i.to_bytes(4, "big"), "echo", "echo", 60_000, payload)
                slows[i % args.clients].send_multipart(frames, copy=False)
                time.sleep(args.pace)
                peak = max(peak, rss_mib(pid))
                if time.monotonic() >= next_call:  # a client that reads, meanwhile
                    next_call += 0.5
                    try:
                        calls["answered" if reader.request("echo", "echo", {}) else "?"] += 1
                    except IKError as e:
                        calls[type(e).__name__] += 1
            stable_since = time.monotonic()
            last = peak = max(peak, rss_mib(pid))
            while time.monotonic() - stable_since < 2.0:  # until the broker read it all
                time.sleep(0.05)
                now_rss = rss_mib(pid)
                peak = max(peak, now_rss)
                if abs(now_rss - last) > 1:
                    stable_since = time.monotonic()
                last = now_rss
            st = reader.status()
            rows.append(
                [
                    f"{args.count} x {args.mib} MiB sent, none read (unread "
                    f"{st.get('unread_bytes', 0) / 2**20:,.0f} MiB, queued "
                    f"{st['queued_bytes'] / 2**20:,.0f} MiB; errors sent {st['errors']}; "
                    f"replies_dropped_unread "
                    f"{st['counters'].get('replies_dropped_unread', 0)})",
                    f"{rss_mib(pid):,.0f} (peak {peak:,.0f})",
                ]
            )
            for slow in slows:
                slow.close(0)
            time.sleep(1.0)
            rows.append(["1 s after it left", f"{rss_mib(pid):,.0f}"])
            time.sleep(2.0)
            rows.append(["3 s after it left", f"{rss_mib(pid):,.0f}"])
            calls["answered after"] += reader.request("echo", "echo", {}) is not None
        ctx.destroy(linger=0)
    print(
        f"\nbroker RSS (MiB), one echo worker, {args.clients} client(s) that never read "
        f"{args.count} x {args.mib} MiB echoes in all (one per {args.pace * 1000:.0f} ms); "
        f"broker args "
        f"{args.broker_arg or 'default'}; a reading client meanwhile: {dict(calls)}\n"
    )
    print(_table(["when", "broker RSS MiB"], rows))


# --------------------------------------------------------------------------- rolling


def rolling(args: argparse.Namespace) -> None:
    with Procs() as procs:
        endpoint = procs.broker().endpoint  # type: ignore[attr-defined]
        workers = [procs.echo_worker(endpoint) for _ in range(2)]
        procs.wait_workers(endpoint, 2)
        with EchoLoad([endpoint], args.clients, timeout=5.0, retries=2) as load:
            time.sleep(args.gap)
            for r in range(args.rounds):
                old = workers[r % 2]
                old.send_signal(signal.SIGTERM)
                old.wait(10)
                procs.procs.remove(old)  # (exited 0, as asked: not a failure)
                workers[r % 2] = procs.echo_worker(endpoint)
                procs.wait_workers(endpoint, 2, timeout=30)
                time.sleep(args.gap)
        counters = _status(endpoint)["counters"]
    tally = load.tally
    lat = sorted(tally.latencies_ms())
    keys = ["refused_stopping", "retries", "workers_unreachable", "duplicate_requests"]
    print(
        f"\n{args.rounds} rolling worker restarts (SIGTERM, one at a time, 2 echo workers), "
        f"{args.clients} clients (timeout 5 s, retries 2)\n"
    )
    print(
        _table(
            ["answered", "errors", "wrong", "p99", "longest", *keys],
            [
                [
                    len(lat),
                    len(tally.errors),
                    tally.wrong,
                    f"{lat[int(0.99 * (len(lat) - 1))]:.1f} ms",
                    f"{lat[-1]:.1f} ms",
                    *(counters.get(k, 0) for k in keys),
                ]
            ],
        )
    )
    for e in tally.errors[:5]:
        print(e)


RUNS: dict[str, tuple[Callable[[argparse.Namespace], None], dict[str, Any]]] = {
    "stall": (stall, {"stall": 5.0, "after": 4.0, "clients": 4}),
    "rogue": (rogue, {"rogues": 10, "names": 100_000, "clients": 4, "seconds": 5.0}),
    "memory": (memory, {"count": 30, "mib": 64, "deadline": 20.0}),
    "unread": (unread, {"count": 2000, "mib": 1, "pace": 0.002, "clients": 1}),
    "rolling": (rolling, {"rounds": 6, "clients": 4, "gap": 1.0}),
}
"""Each run and its options, ``--name`` with this default (and the default's type)."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hardening", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="what", required=True)
    for name, (run, options) in RUNS.items():
        p = sub.add_parser(name)
        for option, default in options.items():
            p.add_argument(f"--{option}", type=type(default), default=default)
        p.set_defaults(run=run)
    for name in ("memory", "unread"):
        sub.choices[name].add_argument("--broker-arg", action="append", default=[])
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    args.run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
