"""Raw pyzmq parties for the messaging floor, each run as its own process:

    python -m benchmarks._raw router-echo --bind EP      # one hop: DEALER <-> ROUTER echo
    python -m benchmarks._raw proxy --frontend EP --backend EP2   # zmq.proxy(ROUTER, DEALER)
    python -m benchmarks._raw dealer-echo --connect EP2  # the echo behind the proxy

Echoes are zero-copy (``copy=False`` both ways): the floor is what libzmq and a minimal
Python loop cost, nothing else.
"""

from __future__ import annotations

import argparse
import signal
import sys

import zmq


def _socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 10_000)
    sock.setsockopt(zmq.RCVHWM, 10_000)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._raw")
    parser.add_argument("role", choices=["router-echo", "dealer-echo", "proxy"])
    parser.add_argument("--bind")
    parser.add_argument("--connect")
    parser.add_argument("--frontend")
    parser.add_argument("--backend")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx = zmq.Context()
    if args.role == "proxy":
        front = _socket(ctx, zmq.ROUTER)
        front.bind(args.frontend)
        back = _socket(ctx, zmq.DEALER)
        back.bind(args.backend)
        zmq.proxy(front, back)
        return 0
    if args.role == "router-echo":
        sock = _socket(ctx, zmq.ROUTER)
        sock.bind(args.bind)
    else:
        sock = _socket(ctx, zmq.DEALER)
        sock.connect(args.connect)
    while True:  # ROUTER: [identity, *frames]; DEALER behind a proxy: [client id, *frames]
        sock.send_multipart(sock.recv_multipart(copy=False), copy=False)


if __name__ == "__main__":
    raise SystemExit(main())
