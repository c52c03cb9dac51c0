"""`client._failover.Brokers` without sockets: probes, down/up, routing, with a synthetic clock."""

from __future__ import annotations

from zmq_ik.client._failover import (
    DOWN_AFTER,
    PROBE_AFTER,
    RECHECK,
    TRANSIT_BYTES_PER_S,
    Brokers,
    is_probe,
)
from zmq_ik.protocol import ALIVE, BROKER_SERVICE, Request, parse_message


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


def test_homes_are_spread_over_the_brokers():
    homes = {Brokers(["a", "b"]).route() for _ in range(64)}
    assert homes == {0, 1}


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
    epoch = b.views[0].epoch
    assert epoch == 1 and b.stays(0, 1) and not b.stays(0, 0)  # sent before: lost with it


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
    assert Brokers(["a"]).start(0.0) == []  # one broker: nothing to choose
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
