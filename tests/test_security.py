"""CURVE on the broker endpoint: key files, who gets in, who does not, and nothing in the logs."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from zmq_ik.client import IKClient
from zmq_ik.errors import IKError, IKTimeout
from zmq_ik.security import CurveClient, fingerprint, keygen, load_allowed_keys

pytestmark = pytest.mark.timeout(90)

NAMES = ("broker", "client", "worker", "intruder", "rogue-worker")


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Keypairs for every name; an allow dir holding only the client's and worker's keys."""
    pairs = keygen(tmp_path / "keys", NAMES)
    allow = tmp_path / "allow"
    allow.mkdir()
    for name, (public, _) in zip(NAMES, pairs, strict=True):
        if name in ("client", "worker"):
            (allow / public.name).write_bytes(public.read_bytes())
    return dict(zip(NAMES, pairs, strict=True))


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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = client.ping(timeout=1.0)
        except IKError:
            continue
        if len(info["workers"]) >= n:
            return info
        time.sleep(0.1)
    raise TimeoutError(f"{n} worker(s) not registered within {timeout}s")


def test_curve_admits_allowed_peers_only_and_keeps_keys_out_of_logs(procs, keys, tmp_path):
    broker_pub, broker_sec = keys["broker"]
    allow = tmp_path / "allow"
    # -vv: debug logging everywhere, where a key would be most likely to slip out. No wait:
    # a plaintext ping would not get through.
    broker = procs.broker(
        "-vv", "--heartbeat", "0.1",
        "--curve-secret-key", str(broker_sec), "--allow-keys", str(allow), wait=False,
    )  # fmt: skip
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
    assert fingerprint(zmq.auth.load_certificate(keys["intruder"][0])[0]) in broker_log
    for proc in procs.procs:
        log = procs.log(proc)
        for _public, secret in keys.values():
            pub, sec = zmq.auth.load_certificate(secret)
            assert sec.decode() not in log, f"secret key in {proc.args}"
            assert pub.decode() not in log, f"public key in {proc.args}"
    assert broker.poll() is None
