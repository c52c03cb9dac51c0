"""`client._failover.Brokers` without sockets: probes, down/up, routing, with a synthetic clock."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import zmq
import zmq.asyncio
from conftest import Box, final, outbox

from zmq_ik.client import AsyncIKClient, IKClient
from zmq_ik.client._core import FINAL, Call, ClientCore
from zmq_ik.client._failover import (
    DOWN_AFTER,
    PROBE_AFTER,
    RECHECK,
    TRANSIT_BYTES_PER_S,
    Brokers,
    is_probe,
)
from zmq_ik.errors import InputError
from zmq_ik.protocol import (
    ALIVE,
    BROKER_SERVICE,
    ENDPOINT_ENV,
    Command,
    Request,
    encode_payload,
    error_frames,
    parse_message,
    reply_frames,
)


def test_home_first_then_the_others_in_list_order():
    b = Brokers(["a", "b", "c"], home=1)
    assert b.order == [1, 2, 0] and b.route() == 1
    b.lost(1)
    assert b.route() == 2
    b.lost(2)
    assert b.route() == 0
    b.lost(0)
    assert b.route() == 1  # none up: the home (what is sent waits for whichever comes back)
    b.heard(1, 1.0)
    assert b.route() == 1


def test_the_first_broker_given_is_home():
    assert Brokers(["a", "b", "c"]).order == [0, 1, 2]


def test_an_idle_client_sends_no_probe_and_judges_nothing():
    b = Brokers(["a", "b"], home=0)
    assert b.tick(100.0) == [] and b.next_due() is None
    assert all(v.up for v in b.views)


def test_a_broker_waited_on_is_probed_after_silence_then_down():
    b = Brokers(["a", "b"], home=0)
    b.sent(0, 100, 10.0)
    assert b.tick(10.0 + PROBE_AFTER / 2) == []
    assert b.next_due() == 10.0 + PROBE_AFTER
    assert b.tick(10.0 + PROBE_AFTER) == [0]
    assert b.tick(10.0 + PROBE_AFTER * 1.5) == []  # one probe per PROBE_AFTER
    assert b.tick(10.0 + PROBE_AFTER * 2 + 1e-9) == [0]
    assert b.views[0].up and not b.changed
    b.tick(10.0 + DOWN_AFTER + 0.001)
    assert not b.views[0].up and b.changed and b.route() == 1
    assert not b.stays(0, 0) and b.stays(1, 0)


def test_any_message_is_a_sign_of_life():
    b = Brokers(["a", "b"], home=0)
    b.sent(0, 100, 10.0)
    for k in range(1, 20):
        b.heard(0, 10.0 + k * 0.09)  # e.g. a stream of PARTIALs
        b.tick(10.0 + k * 0.09)
    assert b.views[0].up


def test_a_large_request_in_transit_extends_the_silence_allowed():
    b = Brokers(["a", "b"], home=0)
    b.sent(0, int(TRANSIT_BYTES_PER_S), 0.0)  # a second's worth of bytes
    b.tick(DOWN_AFTER + 0.5)
    assert b.views[0].up
    b.tick(DOWN_AFTER + 1.01)
    assert not b.views[0].up


def test_silence_counts_from_when_the_client_started_waiting():
    b = Brokers(["a", "b"], home=0)
    b.heard(0, 1.0)
    b.sent(0, 10, 50.0)  # idle for 49 s, then a request
    b.tick(50.01)
    assert b.views[0].up


def test_a_down_broker_is_rechecked_while_the_client_waits_and_used_again():
    b = Brokers(["a", "b"], home=0)
    b.sent(0, 10, 0.0)
    t = DOWN_AFTER + 0.01
    assert b.tick(t) == [0]  # down: probed at once, then every RECHECK while the client waits
    b.changed = False
    b.done(0)
    b.sent(1, 10, t)  # moved to b
    assert 0 not in b.tick(t + RECHECK / 2)
    assert 0 in b.tick(t + RECHECK + 1e-9)
    b.heard(0, 1.0)
    assert b.views[0].up and b.changed and b.route() == 0
    # A new epoch: what was sent before it went down (0), or while it was down (1), is
    # taken for lost (a half-open link libzmq replaced meanwhile took it).
    epoch = b.views[0].epoch
    assert epoch == 2 and b.stays(0, 2) and not b.stays(0, 1) and not b.stays(0, 0)


def test_a_broker_without_workers_is_used_only_if_no_other_has_some():
    b = Brokers(["a", "b"], home=0)
    b.probe_answer(0, {"workers": 0})  # restarted, workers not back yet
    b.probe_answer(1, {"workers": 2})
    assert b.route() == 1 and b.changed
    b.lost(1)
    assert b.route() == 0  # up, if empty, beats down
    b.probe_answer(0, {"workers": 1})
    assert b.route() == 0
    b.probe_answer(0, {})  # an older broker says nothing about workers: fine
    assert b.views[0].ready


def test_the_start_probes_find_a_dead_broker_before_it_is_needed():
    assert Brokers(["a"]).start(0.0) == [0]  # one broker too: its boot id is worth knowing
    b = Brokers(["a", "b"], home=0)
    assert b.start(0.0) == [0, 1]
    b.heard(1, 0.002)
    b.tick(DOWN_AFTER + 0.01)
    assert not b.views[0].up and b.views[1].up and b.route() == 1
    assert b.tick(5.0) == []  # then idle: nothing more


def test_probe_frames_are_alive_requests_with_their_own_ids():
    b = Brokers(["a", "b"])
    first, second = (parse_message(b.probe_frames()) for _ in range(2))
    assert isinstance(first, Request) and isinstance(second, Request)
    assert (first.service, first.operation) == (BROKER_SERVICE, ALIVE)
    assert is_probe(first.request_id) and first.request_id != second.request_id
    assert not is_probe(b"\x00" * 12)


# --------------------------------------------------------------------------- in the client core


def requests(core: ClientCore) -> list[tuple[int, bytes]]:
    """(broker, request id) of what the core sent, probes left out."""
    return [(i, m.request_id) for i, m in outbox(core) if not is_probe(m.request_id)]


def echo_call() -> Call:
    return Call("echo", "echo", {}, {})


def two_brokers() -> ClientCore:
    return ClientCore(["tcp://a:1", "tcp://b:1"], retries=0)  # home: a, the first


def test_a_request_waiting_on_a_silent_broker_goes_to_the_other_with_its_id():
    core, box = two_brokers(), Box()
    rid = core.submit(echo_call(), 3.0, now=0.0, sink=box)
    assert requests(core) == [(0, rid)]
    core.tick(0.2)
    assert [(i, m.operation) for i, m in outbox(core)] == [(0, ALIVE)]  # probed, silent
    core.tick(DOWN_AFTER + 0.001)
    assert requests(core) == [(1, rid)]  # same id, through b, no attempt spent (retries=0)
    assert core.pending[rid].attempts == 1 and core.pending[rid].expires == 3.0 + 0.25
    core.handle(final(rid), now=0.5, connection=1)
    core.handle(final(rid), now=6.0, connection=0)  # a frozen a wakes up and answers too
    assert box.kinds() == [FINAL]  # the caller gets one answer
    assert core.next_due() is None  # idle: nothing more, not even probes


def test_the_only_broker_restarted_gets_the_lost_request_again_as_soon_as_it_answers():
    core, box = ClientCore(["tcp://a:1"], retries=0), Box()
    rid = core.submit(echo_call(), 3.0, now=0.0, sink=box)
    requests(core)
    core.tick(DOWN_AFTER + 0.001)  # a died with the request
    assert requests(core) == []  # nowhere else to go
    core.handle(final(b"alive" + bytes(8)), 1.0, 0)
    assert requests(core) == [(0, rid)]  # a is back: sent again at once, same id
    core.handle(final(rid), now=1.1)
    assert box.kinds() == [FINAL]


def test_a_broker_that_was_not_up_yet_is_no_fault_in_the_log(caplog):
    """Issue 27.3: every healthy `zmq-ik demo` logged `broker ... down or restarted: 1
    request(s) sent again`: its first ping went out before the broker it had just started
    listened. A broker never heard from did not go down or restart; one heard from did."""
    caplog.set_level(logging.INFO, "zmq_ik.client")
    core, box = ClientCore(["tcp://a:1"], retries=0), Box()
    core.start(0.0)
    rid = core.submit(echo_call(), 3.0, now=0.0, sink=box)
    core.tick(DOWN_AFTER + 0.001)  # not listening yet: silent
    requests(core)
    core.handle(final(b"alive" + bytes(8)), 1.0, 0)  # its first answer ever
    assert requests(core) == [(0, rid)]  # what waited goes again all the same, same id
    assert "down or restarted" not in caplog.text
    core.handle(final(rid), now=1.1)
    rid = core.submit(echo_call(), 3.0, now=2.0, sink=box)
    core.tick(2.0 + DOWN_AFTER + 0.001)  # answered before, silent now: it went away
    requests(core)
    core.handle(final(b"alive" + bytes(8)), 3.0, 0)
    assert requests(core) == [(0, rid)]
    assert "broker tcp://a:1 down or restarted: 1 request(s) sent again" in caplog.text


def test_what_was_sent_while_the_only_broker_was_down_goes_again_when_it_answers():
    """A half-open link (#25.4): the request and its retry went into a dead connection;
    libzmq replaced it (`protocol.set_link_heartbeats`), and the first probe answered on the
    new one sends the request again at once, not after another attempt's timeout."""
    core, box = ClientCore(["tcp://a:1"], retries=2), Box()
    rid = core.submit(echo_call(), 1.0, now=0.0, sink=box)
    requests(core)
    core.tick(DOWN_AFTER + 0.001)  # silent: down
    core.tick(1.2)  # the attempt timed out: its retry goes to a, while a is down
    assert requests(core) == [(0, rid)] and core.pending[rid].attempts == 2
    core.handle(final(b"alive" + bytes(8)), 1.5, 0)  # a answers a probe: a new connection
    assert requests(core) == [(0, rid)]  # sent again at once, same id, no attempt spent
    assert core.pending[rid].attempts == 2
    core.handle(final(rid), now=1.6)
    assert box.kinds() == [FINAL]


def test_shutting_down_sends_the_request_to_the_other_broker_at_once_without_an_attempt():
    core, box = two_brokers(), Box()
    rid = core.submit(echo_call(), 3.0, now=0.0, sink=box)
    requests(core)
    core.handle(error_frames(rid, "shutting_down", "broker is shutting down"), 0.1, 0)
    assert requests(core) == [(1, rid)] and not box.events
    assert core.pending[rid].attempts == 1
    rid2 = core.submit(echo_call(), 3.0, now=0.2, sink=box)
    assert requests(core) == [(1, rid2)]  # a is going away: new work goes to b


def test_a_client_started_with_several_brokers_probes_each_once():
    core = ClientCore(["tcp://a:1", "tcp://b:1"])
    core.start(0.0)
    assert sorted((i, m.operation) for i, m in outbox(core)) == [(0, ALIVE), (1, ALIVE)]
    core.handle(final(b"alive" + bytes(8)), 0.01, 1)
    core.tick(DOWN_AFTER + 0.01)  # a never answered: down before it is needed
    rid = core.submit(echo_call(), 3.0, now=0.5, sink=Box())
    assert (1, rid) in requests(core)


def alive(boot: str, workers: int = 2) -> list[Any]:
    return reply_frames(
        Command.FINAL, b"alive" + bytes(8), encode_payload({"workers": workers, "boot": boot})
    )


def test_a_broker_restarted_faster_than_down_after_is_known_by_its_boot_id():
    """The broker died with the request and came back within 0.4 s, and the client keeps
    hearing from it (other answers): only the new `boot` id tells that the request is lost."""
    core, box = ClientCore(["tcp://a:1"], retries=0), Box()
    core.handle(alive("first"), 0.0, 0)
    rid = core.submit(echo_call(), 3.0, now=0.0, sink=box)
    requests(core)
    for k in range(1, 6):  # answers to other requests keep coming: no silence
        core.handle(final(b"someone-else"), k * 0.05, 0)
        core.tick(k * 0.05)
    probes = [(i, m.operation) for i, m in outbox(core)]
    assert probes == [(0, ALIVE)]  # a confirming probe after RECHECK, though not silent
    core.handle(alive("second"), 0.3, 0)  # a new process
    assert requests(core) == [(0, rid)]  # sent again at once, same id
    core.handle(alive("second"), 0.6, 0)
    assert requests(core) == []  # same process: nothing more


def test_clients_take_several_endpoints_as_a_list_a_comma_string_or_the_environment(
    monkeypatch: Any,
):
    a, b = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"
    monkeypatch.setenv(ENDPOINT_ENV, f"{a},{b}")
    ctx = zmq.Context()
    try:
        for given in ([a, b], f"{a},{b}", f" {a} , {b} ,{a}", None):
            with IKClient(given, context=ctx) as client:
                assert client.endpoints == (a, b) and len(client.sockets) == 2
        for bad in ([a, "gpu-host:5555"], [a, 5], ","):
            with pytest.raises(InputError) as e:
                IKClient(bad, context=ctx)  # type: ignore[arg-type]
            assert e.value.field == "endpoint"
    finally:
        ctx.destroy(linger=0)

    async def async_endpoints() -> tuple[str, ...]:
        actx = zmq.asyncio.Context()
        try:
            async with AsyncIKClient(f"{a},{b}", context=actx) as client:
                return client.endpoints
        finally:
            actx.destroy(linger=0)

    assert asyncio.run(async_endpoints()) == (a, b)
