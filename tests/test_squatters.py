"""A peer that claims the ids libzmq will invent for other peers must not abort the broker.

libzmq's ROUTER gives a peer without a ``ROUTING_ID`` the id ``0x00`` + a counter and never
checks that a peer has not already claimed it (an assertion then aborts the process). The
broker seeds the counter unpredictably and never shows such ids; our own peers name
themselves. These tests squat the upcoming ids every way a peer could learn or guess them.
"""

from __future__ import annotations

import time

import zmq
from conftest import wait_for_workers

from zmq_ik.client import IKClient

UNSEEDED_START = 0x6B8B4567  # glibc rand() unseeded: where every broker's counter started


def _dealer(ctx: zmq.Context, endpoint: str, routing_id: bytes | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(endpoint)
    return sock


def _squat(ctx: zmq.Context, endpoint: str, start: int, n: int) -> list[zmq.Socket]:
    socks = [
        _dealer(ctx, endpoint, b"\0" + ((start + k) % 2**32).to_bytes(4, "big")) for k in range(n)
    ]
    for s in socks:  # make sure each one is attached before the nameless peers arrive
        s.send_multipart([b"ZIK/1", b"HEARTBEAT"])
    return socks


def test_squatting_upcoming_ids_does_not_crash_the_broker(procs, zctx):
    broker = procs.broker()
    endpoint = broker.endpoint
    procs.echo_worker(endpoint)
    info = wait_for_workers(endpoint, 1)
    # Our own peers name themselves: the worker's id is not one libzmq invented.
    assert not info["workers"][0]["id"].startswith("00")
    squatters = _squat(zctx, endpoint, UNSEEDED_START, 32)
    # A nameless peer that registers as a worker: status must not reveal its invented id.
    spy = _dealer(zctx, endpoint)
    spy.send_multipart([b"ZIK/1", b"READY", b"\x81\xa6robots\x91\xa4spyr"])
    with IKClient(endpoint, timeout=2, retries=1) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ids = [w["id"] for w in client.ping()["workers"]]
            if len(ids) == 2:
                break
            time.sleep(0.05)
        assert len(ids) == 2, ids
        assert all(not i.startswith("00") for i in ids), ids
    # Squat what the shown ids would predict, then connect many nameless peers.
    for shown in ids:
        if shown.startswith("~"):
            continue
        squatters += _squat(zctx, endpoint, int(shown[-8:], 16) + 1, 8)
    nameless = [_dealer(zctx, endpoint) for _ in range(64)]
    for s in nameless:
        s.send_multipart([b"ZIK/1", b"HEARTBEAT"])
    with IKClient(endpoint, timeout=5, retries=0) as client:
        assert client.request("echo", "echo", {"n": 7}).header["n"] == 7
    assert broker.poll() is None, procs.log(broker)
    for s in [*squatters, spy, *nameless]:
        s.close(0)
