"""CURVE on the broker endpoint: key files, who gets in, who does not, and nothing in the logs."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from benchmarks._harness import poll_workers
from zmq_ik.broker import Broker, BrokerSettings
from zmq_ik.broker._broker import is_local_endpoint
from zmq_ik.cli import main
from zmq_ik.client import IKClient
from zmq_ik.errors import IKTimeout, InputError, NoBroker
from zmq_ik.protocol import (
    Command,
    Reply,
    decode_error,
    parse_message,
    ready_frames,
    warming_frames,
)
from zmq_ik.security import CurveClient, KeyNotices, fingerprint, keygen, load_allowed_keys

pytestmark = pytest.mark.timeout(90)

NAMES = ("broker", "client", "worker", "intruder", "rogue-worker")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Keypairs for every name; the client's key in an ``allow`` dir (--allow-keys), the
    worker's in a ``workers`` dir (--worker-keys)."""
    pairs = keygen(tmp_path / "keys", NAMES)
    for name, (public, _) in zip(NAMES, pairs, strict=True):
        where = {"client": "allow", "worker": "workers"}.get(name)
        if where is not None:
            (tmp_path / where).mkdir(exist_ok=True)
            (tmp_path / where / public.name).write_bytes(public.read_bytes())
    return dict(zip(NAMES, pairs, strict=True))


def curve_broker(procs, keys, tmp_path: Path, *extra: str, wait: bool = True):
    """A CURVE broker admitting the ``allow`` dir's client keys and ``workers`` dir's."""
    return procs.broker(
        "--heartbeat", "0.1", "--curve-secret-key", str(keys["broker"][1]),
        "--allow-keys", str(tmp_path / "allow"), "--worker-keys", str(tmp_path / "workers"),
        *extra, wait=wait,
    )  # fmt: skip


def test_keygen_writes_public_and_private_secret_files(tmp_path: Path) -> None:
    pairs = keygen(tmp_path / "k", ["a", "b"])
    assert [(p.name, s.name) for p, s in pairs] == [
        ("a.key", "a.key_secret"),
        ("b.key", "b.key_secret"),
    ]
    for public, secret in pairs:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        pub, sec = zmq.auth.load_certificate(secret)
        assert sec and zmq.auth.load_certificate(public) == (pub, None)
        assert len(pub) == len(sec) == 40  # z85 of 32 bytes
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [
        "a.key",
        "a.key_secret",
        "b.key",
        "b.key_secret",
    ]  # no staging leftovers
    with pytest.raises(FileExistsError):
        keygen(tmp_path / "k", ["a"])  # never silently replace a key
    with pytest.raises(ValueError):
        keygen(tmp_path / "k", ["../escape"])
    assert len(load_allowed_keys(tmp_path / "k")) == 2  # only the *.key files count


def test_curve_client_keys_and_repr_hides_them(keys) -> None:
    server_pub = zmq.auth.load_certificate(keys["broker"][0])[0]
    client = CurveClient.from_files(keys["broker"][0], keys["client"][1])
    pub, sec = zmq.auth.load_certificate(keys["client"][1])
    assert (client.server_public, client.public, client.secret) == (server_pub, pub, sec)
    for text in (repr(client), str(client), f"{client}"):
        assert sec.decode() not in text and pub.decode() not in text
        assert server_pub.decode() not in text and fingerprint(pub) in text
    ephemeral = CurveClient.from_files(keys["broker"][0])
    assert ephemeral.public != pub and len(ephemeral.secret) == 40
    with pytest.raises(ValueError, match="no secret key"):
        CurveClient.from_files(keys["broker"][0], keys["client"][0])  # a public file
    with zmq.Context() as ctx, ctx.socket(zmq.DEALER) as sock:
        client.apply(sock)
        assert sock.getsockopt(zmq.MECHANISM) == zmq.CURVE
        assert not sock.getsockopt(zmq.CURVE_SERVER)


def _wait_workers(client: IKClient, n: int, timeout: float = 30.0) -> dict:
    return poll_workers(lambda: client.ping(timeout=1.0), n, timeout=timeout)


def test_curve_admits_allowed_peers_only_and_keeps_keys_out_of_logs(procs, keys, tmp_path):
    broker_pub = keys["broker"][0]
    # -vv: debug logging everywhere, where a key would be most likely to slip out. No wait:
    # a plaintext ping would not get through.
    broker = curve_broker(procs, keys, tmp_path, "-vv", wait=False)
    endpoint = broker.endpoint

    def worker(name: str):
        return procs.start(
            "-vv", "worker", "--echo", "--connect", endpoint, "--heartbeat", "0.1",
            "--curve-server-key", str(broker_pub), "--curve-secret-key", str(keys[name][1]),
        )  # fmt: skip

    rogue = worker("rogue-worker")  # a worker whose key is not allowed
    good = CurveClient.from_files(broker_pub, keys["client"][1])
    with IKClient(endpoint, timeout=2.0, retries=0, curve=good) as client:
        _wait_workers(client, 0)  # the broker answers an allowed client
        time.sleep(1.5)  # the rogue worker has had ample time to try (and retry)
        assert client.ping()["workers"] == []  # ... but could not register
        assert rogue.poll() is None  # it is still trying, not crashed

        worker("worker")
        info = _wait_workers(client, 1)
        assert len(info["workers"]) == 1  # only the allowed one
        assert client.request("echo", "echo", {"hi": 1}).header["hi"] == 1

        # A client with a key the broker does not know gets nothing through, and times out
        # cleanly; so do a plaintext client and one with an ephemeral key.
        for curve in (
            CurveClient.from_files(broker_pub, keys["intruder"][1]),
            CurveClient.from_files(broker_pub),
            None,
        ):
            t0 = time.monotonic()
            with IKClient(endpoint, timeout=0.5, retries=1, curve=curve) as intruder:
                with pytest.raises(IKTimeout):
                    intruder.request("echo", "echo", {"intruder": 1})
            assert time.monotonic() - t0 < 5.0
        status = client.status()
        assert status["counters"].get("requests", 0) == 1  # the intruders' never arrived
        assert len(status["workers"]) == 1
        assert client.request("echo", "echo", {"still": 2}).header["still"] == 2

    time.sleep(0.3)  # let the last log lines reach the files
    broker_log = procs.log(broker)
    assert "refused a CURVE peer" in broker_log  # ZAP really denied, with a fingerprint
    for name in ("intruder", "rogue-worker"):  # each refused key is logged, not one in all
        assert fingerprint(zmq.auth.load_certificate(keys[name][0])[0]) in broker_log
    rogue_log = procs.log(rogue)  # issue 25.7: it said "serving", then reconnected silently
    assert "serving" not in rogue_log and "registered with" not in rogue_log
    assert (
        f"the broker refused this worker's CURVE key (fingerprint {_fp(keys, 'rogue-worker')})"
        in rogue_log
    )
    assert "--worker-keys" in rogue_log
    for proc in procs.procs:
        log = procs.log(proc)
        for _public, secret in keys.values():
            pub, sec = zmq.auth.load_certificate(secret)
            assert sec.decode() not in log, f"secret key in {proc.args}"
            assert pub.decode() not in log, f"public key in {proc.args}"
    assert broker.poll() is None


def _fp(keys, name: str) -> str:
    return fingerprint(zmq.auth.load_certificate(keys[name][0])[0])


def test_a_client_key_cannot_register_as_a_worker(procs, keys, tmp_path, zctx):
    """Issue 25.1: an allowed robot's key registering as a worker got other robots' jobs.
    Now only --worker-keys keys register: a client key's WARMING and READY get ERROR
    ``forbidden`` naming its fingerprint; the worker exits 78 saying so, never "serving"."""
    # A worker key may be listed in --allow-keys too: still a worker key.
    (tmp_path / "allow" / "worker.key").write_bytes(keys["worker"][0].read_bytes())
    broker = curve_broker(procs, keys, tmp_path, wait=False)
    endpoint, broker_pub = broker.endpoint, keys["broker"][0]
    t0 = time.monotonic()
    fake = procs.start(
        "worker", "--echo", "--connect", endpoint, "--heartbeat", "0.1",
        "--curve-server-key", str(broker_pub), "--curve-secret-key", str(keys["client"][1]),
    )  # fmt: skip
    assert fake.wait(timeout=30) == 78
    fake_log = procs.log(fake)
    assert f"[forbidden] this peer's CURVE key (fingerprint {_fp(keys, 'client')})" in fake_log
    assert "--worker-keys" in fake_log and "serving" not in fake_log
    print(f"client-key worker exited 78 after {time.monotonic() - t0:.2f}s")

    # A raw DEALER with the client key: WARMING and READY refused, nothing registered.
    sock = zctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    CurveClient.from_files(broker_pub, keys["client"][1]).apply(sock)
    sock.connect(endpoint)
    info = {"robots": ["echo"], "host": "h", "pid": 1}
    for frames in (warming_frames({**info, "progress": {"done": 0, "total": 0, "elapsed_s": 0}}),
                   ready_frames(info)):  # fmt: skip
        sock.send_multipart(frames)
        assert sock.poll(5000), "no answer to a client key's registration"
        msg = parse_message(sock.recv_multipart())
        assert isinstance(msg, Reply) and msg.command is Command.ERROR
        assert decode_error(msg.payload)[0] == "forbidden"
    sock.close(0)

    good = procs.start(
        "worker", "--echo", "--connect", endpoint, "--heartbeat", "0.1",
        "--curve-server-key", str(broker_pub), "--curve-secret-key", str(keys["worker"][1]),
    )  # fmt: skip
    for name in ("client", "worker"):  # a worker key may send requests too
        with IKClient(
            endpoint, timeout=2.0, curve=CurveClient.from_files(broker_pub, keys[name][1])
        ) as c:
            assert len(_wait_workers(c, 1)["workers"]) == 1
            assert c.request("echo", "echo", {"n": name}).header["n"] == name
            counters = c.status()["counters"]
    assert counters["workers_refused_key"] >= 3  # the fake's WARMING, the raw WARMING, READY
    assert counters["workers_registered"] == 1
    time.sleep(0.3)
    broker_log = procs.log(broker)
    assert f"fingerprint {_fp(keys, 'client')}" in broker_log
    assert broker_log.count("refused worker") == 1  # rate-limited per key: one line a minute
    assert "registered with broker" in procs.log(good) and good.poll() is None


def test_key_notices_are_per_key_and_bounded_in_total() -> None:
    notices = KeyNotices(interval=60.0, burst=3)
    assert notices.due("a", 0.0) == 0 and notices.due("b", 0.0) == 0
    assert notices.due("a", 30.0) is None  # the same key within a minute: not again
    assert notices.due("c", 30.0) == 0
    assert notices.due("d", 31.0) is None and notices.due("e", 32.0) is None  # 3 a minute
    assert notices.due("a", 61.0) == 2  # a new minute: says how many it held back
    assert notices.due("a", 62.0) is None


@pytest.mark.parametrize(
    ("endpoint", "local"),
    [("tcp://127.0.0.1:5555", True), ("tcp://[::1]:5555", True), ("ipc:///tmp/x", True),
     ("inproc://x", True), ("tcp://0.0.0.0:5555", False), ("tcp://[::]:5555", False),
     ("tcp://10.1.2.3:5555", False)],
)  # fmt: skip
def test_which_endpoints_are_local(endpoint: str, local: bool) -> None:
    assert is_local_endpoint(endpoint) is local


def test_a_plaintext_broker_on_a_network_interface_warns_once(caplog) -> None:
    """Issue 25.2: binding beyond loopback without CURVE says so, one line, at start-up."""
    caplog.set_level(logging.INFO, "zmq_ik.broker")
    for bind, warned in (("tcp://127.0.0.1:*", False), ("tcp://0.0.0.0:*", True)):
        caplog.clear()
        Broker(BrokerSettings(bind=bind, worker_bind="tcp://127.0.0.1:*")).close()
        lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(lines) == warned, lines
        if warned:
            assert "without CURVE" in lines[0] and "0.0.0.0" in lines[0]
            assert "127.0.0.1" not in lines[0]  # the loopback endpoint is not named


def test_key_directories_without_curve_are_refused() -> None:
    for given in ({"allow_keys": "d"}, {"worker_keys": "d"}):
        with pytest.raises(InputError, match="needs --curve-secret-key") as e:
            BrokerSettings(**given)
        assert e.value.field == next(iter(given))
    with pytest.raises(InputError, match="--worker-keys"):
        BrokerSettings(curve_secret_key="k")


def test_serve_with_curve_registers_its_workers_and_admits_clients(
    procs, keys, tmp_path, serve_endpoint
):
    """`serve` takes the broker's CURVE options and gives its workers the worker key."""
    sup = procs.serve(
        serve_endpoint, "--echo", "--curve-secret-key", str(keys["broker"][1]),
        "--allow-keys", str(tmp_path / "allow"), "--worker-keys", str(tmp_path / "workers"),
        "--worker-secret-key", str(keys["worker"][1]),
    )  # fmt: skip
    curve = CurveClient.from_files(keys["broker"][0], keys["client"][1])
    with IKClient(serve_endpoint, timeout=2.0, curve=curve) as client:
        assert len(_wait_workers(client, 1)["workers"]) == 1
        assert client.request("echo", "echo", {"x": 1}).header["x"] == 1
    assert sup.poll() is None


def test_a_refused_client_says_why_with_its_fingerprint_in_about_2s(procs, keys, tmp_path):
    """Issue 25.7: a refused key heard only silence (`no answer ... is a broker running
    there?`, after every attempt). Now the client's first request fails in ~2 s, saying what
    libzmq's handshake monitor saw: its key refused (with its fingerprint), plaintext to a
    CURVE broker, or a server key that is not this broker's."""
    broker = curve_broker(procs, keys, tmp_path, wait=False)
    broker_pub = keys["broker"][0]
    good = CurveClient.from_files(broker_pub, keys["client"][1])
    with IKClient(broker.endpoint, timeout=2.0, curve=good) as client:
        _wait_workers(client, 0)  # the broker is up
    cases = [
        (CurveClient.from_files(broker_pub, keys["intruder"][1]), f"key (fingerprint {_fp(keys, 'intruder')})"),
        (None, "the broker uses CURVE: pass --curve-server-key"),
        (CurveClient.from_files(keys["client"][0], keys["client"][1]), "is --curve-server-key the public key"),
    ]  # fmt: skip
    for curve, says in cases:
        t0 = time.monotonic()
        with IKClient(broker.endpoint, timeout=30.0, curve=curve) as client:
            with pytest.raises(NoBroker) as e:
                client.request("echo", "echo", {})
        took = time.monotonic() - t0
        assert says in str(e.value) and "within 2s" in str(e.value)
        assert 1.9 < took < 3.0, took
        print(f"{says[:30]!r}: {took:.2f}s")
    # A ping shorter than 2 s times out first, and says the same.
    refused = CliRunner().invoke(main, [
        "ping", "--endpoint", broker.endpoint, "--timeout", "0.5", "--curve-server-key",
        str(broker_pub), "--curve-secret-key", str(keys["intruder"][1]),
    ])  # fmt: skip
    assert refused.exit_code == 1 and "within 0.5s: the broker refused" in refused.output
    assert f"fingerprint {_fp(keys, 'intruder')}" in refused.output
    assert "is a broker" not in refused.output
    with IKClient(broker.endpoint, timeout=2.0, curve=good) as client:
        assert client.ping()["workers"] == []  # the broker was there all along


def test_handshake_monitors_leak_nothing(procs, keys, tmp_path):
    """Each client socket is watched by a monitor; closed with its monitor on while its
    handshake failed, libzmq kept ~3 file descriptors per client, forever. Plaintext clients
    of a CURVE broker (every handshake fails), opened and closed in a row."""
    broker = curve_broker(procs, keys, tmp_path, wait=False)
    fds = Path("/proc/self/fd")
    for _ in range(20):  # warm: the context's own descriptors
        IKClient(broker.endpoint).close()
    time.sleep(0.5)
    before = len(list(fds.iterdir()))
    for _ in range(300):
        IKClient(broker.endpoint).close()
    time.sleep(1.0)  # libzmq's reaper frees closed sockets in the background
    assert len(list(fds.iterdir())) - before < 20


def test_a_silent_peer_that_completed_a_handshake_is_waited_for(zctx):
    """`NoBroker` is for nobody there (or a refused handshake): a ROUTER that accepts the
    connection but never answers (a broker too busy to read) is waited for, as before."""
    router = zctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    t0 = time.monotonic()
    with IKClient(f"tcp://127.0.0.1:{port}", timeout=3.0, retries=0, context=zctx) as client:
        with pytest.raises(IKTimeout) as e:
            client.request("echo", "echo", {})
    assert not isinstance(e.value, NoBroker) and time.monotonic() - t0 > 3.0
