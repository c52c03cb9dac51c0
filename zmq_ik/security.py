"""CURVE encryption and authentication for the broker endpoint (RFC 26/CurveZMQ + ZAP).

* `keygen` writes keypairs with `zmq.auth.create_certificates`: ``NAME.key`` (public, may be
  copied anywhere) and ``NAME.key_secret`` (secret, mode 0600, never leaves its host).
* `configure_curve_server` makes a broker ROUTER a CURVE server and starts pyzmq's ZAP
  authenticator (one per context), which admits only peers whose public key is in the
  allowed-keys directory. Every source address may *try* (there is no IP allow list; the
  key decides), so loopback peers are held to the same rule as remote ones.
* `CurveClient` holds the keys a client or worker needs and applies them to a DEALER.

Keys never appear in logs or reprs: where a key must be identified, a short SHA-256
fingerprint is shown instead (`fingerprint`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq
import zmq.auth

if TYPE_CHECKING:  # imported when a broker needs one: it imports asyncio
    from zmq.auth.thread import ThreadAuthenticator

logger = logging.getLogger(__name__)
zap_logger = logging.getLogger("zmq_ik.security.zap")
"""pyzmq's ZAP authenticator logs here. Its per-handshake lines (with the peer's key) are
debug level; the level is held at INFO so they never print: `AllowedKeys` logs decisions."""

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"


def fingerprint(key: bytes | str) -> str:
    """A short, non-reversible name for a key (12 hex digits of its SHA-256), for logs."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    return hashlib.sha256(raw).hexdigest()[:12]


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")


# --------------------------------------------------------------------------- key files


def keygen(
    directory: str | os.PathLike[str], names: Iterable[str], *, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """Write one CURVE keypair per name into ``directory``; return (public, secret) paths.

    Each pair is created in a private (0700) staging directory, the secret file is made
    0600, and both are then moved into place, so a secret is never readable by others,
    not even for a moment. An existing keypair is refused unless ``overwrite``: replacing a
    broker's key silently would lock every peer out.
    """
    _require_curve()
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    names = list(names)
    for name in names:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"invalid key name {name!r}: use a plain file name")
        for suffix in (PUBLIC_SUFFIX, SECRET_SUFFIX):
            if (target / f"{name}{suffix}").exists() and not overwrite:
                raise FileExistsError(
                    f"{target / (name + suffix)} exists; remove it first to replace the key"
                )
    written: list[tuple[Path, Path]] = []
    staging = Path(tempfile.mkdtemp(prefix=".keygen-", dir=target))  # mkdtemp: mode 0700
    try:
        for name in names:
            public_tmp, secret_tmp = zmq.auth.create_certificates(staging, name)
            os.chmod(secret_tmp, stat.S_IRUSR | stat.S_IWUSR)
            os.chmod(public_tmp, 0o644)
            public = target / f"{name}{PUBLIC_SUFFIX}"
            secret = target / f"{name}{SECRET_SUFFIX}"
            os.replace(secret_tmp, secret)
            os.replace(public_tmp, public)
            written.append((public, secret))
            logger.info(
                "wrote CURVE keypair %s (public key %s)", name, fingerprint(load_public_key(public))
            )
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The z85 public key in a ``.key`` (or ``.key_secret``) file."""
    public, _ = zmq.auth.load_certificate(os.fspath(path))
    return public


def load_secret_keypair(path: str | os.PathLike[str]) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys from a ``.key_secret`` file; refuses a public-only file."""
    public, secret = zmq.auth.load_certificate(os.fspath(path))
    if not secret:
        raise ValueError(f"{path} holds no secret key (pass the NAME{SECRET_SUFFIX} file)")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "secret key file %s is readable by group/others (mode %o): chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    return public, secret


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class CurveClient:
    """CURVE keys of a client or worker: the broker's public key and this peer's keypair.

    ``repr`` shows fingerprints only, so a CurveClient can be logged or shown in a traceback
    without leaking its secret.
    """

    server_public: bytes = field(repr=False)
    """The broker's z85 public key."""
    public: bytes = field(repr=False)
    """This peer's z85 public key (what the broker's allowed-keys directory must hold)."""
    secret: bytes = field(repr=False)
    """This peer's z85 secret key."""

    @classmethod
    def from_files(
        cls,
        server_key_file: str | os.PathLike[str],
        own_secret_file: str | os.PathLike[str] | None = None,
    ) -> CurveClient:
        """Keys from files: the broker's ``.key`` and this peer's ``.key_secret``.

        Without ``own_secret_file`` an ephemeral keypair is generated: the link is encrypted,
        but a broker with an allowed-keys list will refuse it (it is not on the list).
        """
        _require_curve()
        server_public = load_public_key(server_key_file)
        if own_secret_file is None:
            public, secret = zmq.curve_keypair()
        else:
            public, secret = load_secret_keypair(own_secret_file)
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client of the broker (call before connect)."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)

    def __repr__(self) -> str:
        return (
            f"CurveClient(server={fingerprint(self.server_public)}, "
            f"public={fingerprint(self.public)}, secret=<hidden>)"
        )

    __str__ = __repr__


# --------------------------------------------------------------------------- server


class KeyNotices:
    """When to log about a key: at most once per ``interval`` per key, and at most ``burst``
    lines per ``interval`` over all keys (so a peer making up keys cannot flood the log).
    `due` counts what it holds back; the next line logged says how many."""

    def __init__(self, interval: float = 60.0, burst: int = 60) -> None:
        self.interval = interval
        self.burst = burst
        self._last: dict[str, float] = {}
        self._window = -1e9
        self._in_window = 0
        self.held_back = 0
        self._lock = threading.Lock()  # the ZAP authenticator calls from its own thread

    def due(self, key_fingerprint: str, now: float) -> int | None:
        """None: do not log now. Otherwise log, mentioning the returned count of notices
        held back since the last one logged (usually 0)."""
        with self._lock:
            if now - self._last.get(key_fingerprint, -1e9) < self.interval:
                return None
            if now - self._window >= self.interval:
                self._window, self._in_window = now, 0
            if self._in_window >= self.burst:
                self.held_back += 1
                return None
            if len(self._last) >= 10_000:
                self._last.clear()
            self._last[key_fingerprint] = now
            self._in_window += 1
            held, self.held_back = self.held_back, 0
            return held


def held_back(count: int) -> str:
    """A log line's tail for `KeyNotices.due`'s count."""
    return f" ({count} similar notice(s) held back)" if count else ""


class AllowedKeys:
    """pyzmq's CURVE credentials provider: admits exactly the public keys it was given,
    client keys and worker keys alike (`registration_refusal` tells them apart).

    The ZAP authenticator calls `callback` for every CURVE handshake
    (`ThreadAuthenticator.configure_curve_callback`); the decision and its log line are
    ours: a refused key is logged by fingerprint, never in full, once a minute per key
    (`KeyNotices`), however often a peer retries.
    """

    def __init__(self, keys: Iterable[bytes], workers: Iterable[bytes] = ()) -> None:
        self.workers = frozenset(bytes(k) for k in workers)
        """Keys that may register as workers (``--worker-keys``)."""
        self._keys = frozenset(bytes(k) for k in keys) | self.workers
        self.notices = KeyNotices()

    def __len__(self) -> int:
        return len(self._keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """True if the z85 public ``key`` may connect (pyzmq's provider interface)."""
        if bytes(key) in self._keys:
            return True
        fp = fingerprint(key)
        held = self.notices.due(fp, time.monotonic())
        if held is not None:
            logger.warning(
                "refused a CURVE peer: its public key (fingerprint %s) is not allowed "
                "(not in --allow-keys or --worker-keys)%s",
                fp,
                held_back(held),
            )
        return False

    def registration_refusal(self, key: str | bytes | None) -> str | None:
        """Why a peer connected with z85 public ``key`` (libzmq's ``User-Id`` of its
        messages) may not register as a worker, or None: only keys from ``--worker-keys``
        may. The text names the key by fingerprint and says what to do."""
        raw = key.encode() if isinstance(key, str) else key
        if raw is not None and bytes(raw) in self.workers:
            return None
        who = f"fingerprint {fingerprint(raw)}" if raw else "no CURVE key"
        return (
            f"this peer's CURVE key ({who}) is not a worker key of this broker, so it may "
            f"not register as a worker: put its NAME.key in the broker's --worker-keys "
            f"directory (not only --allow-keys) and restart the broker"
        )


def load_allowed_keys(allow_keys_dir: str | os.PathLike[str]) -> list[bytes]:
    """Public keys of every ``*.key`` file in ``allow_keys_dir`` (what ZAP will admit)."""
    directory = Path(allow_keys_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"allowed-keys directory {directory} does not exist")
    keys = []
    for path in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")):
        try:
            keys.append(load_public_key(path))
        except (OSError, ValueError) as e:
            raise ValueError(f"bad public key file {path}: {e}") from e
    return keys


def configure_curve_server(
    sock: zmq.Socket[Any],
    context: zmq.Context[Any],
    secret_key_file: str | os.PathLike[str],
    allow_keys_dir: str | os.PathLike[str] | None,
    authenticator: ThreadAuthenticator | None = None,
    worker_keys_dir: str | os.PathLike[str] | None = None,
) -> tuple[ThreadAuthenticator, AllowedKeys]:
    """Make ``sock`` a CURVE server admitting only the public keys in ``allow_keys_dir``
    (client keys) and ``worker_keys_dir`` (worker keys: they alone may register as workers;
    one may be in both directories, which changes nothing).

    Call before ``bind``. Starts a ZAP `ThreadAuthenticator` on ``context`` unless one is
    passed in (there can be only one ZAP handler per context; a broker with a second,
    worker-only endpoint reuses it). Returns the authenticator (`stop()` it after the
    sockets are closed) and its `AllowedKeys`. The keys are read once, here: restart the
    broker after adding or removing one.
    """
    _require_curve()
    if allow_keys_dir is None and worker_keys_dir is None:
        raise ValueError("CURVE needs --allow-keys DIR and/or --worker-keys DIR")
    public, secret = load_secret_keypair(secret_key_file)
    if authenticator is None:
        clients = load_allowed_keys(allow_keys_dir) if allow_keys_dir is not None else []
        workers = load_allowed_keys(worker_keys_dir) if worker_keys_dir is not None else []
        allowed = AllowedKeys(clients, workers)
        if not allowed:
            logger.warning("no *.key files in the key directories: every peer will be refused")
        elif not allowed.workers:
            logger.warning("no worker keys (--worker-keys DIR): no worker can register")
        zap_logger.setLevel(max(zap_logger.getEffectiveLevel(), logging.INFO))
        from zmq.auth.thread import ThreadAuthenticator

        authenticator = ThreadAuthenticator(context, log=zap_logger)
        authenticator.start()
        authenticator.configure_curve_callback("*", allowed)
        logger.info(
            "CURVE on: broker key %s, %d client key(s) from %s, %d worker key(s) from %s",
            fingerprint(public),
            len(set(clients) - allowed.workers),
            allow_keys_dir,
            len(allowed.workers),
            worker_keys_dir,
        )
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.setsockopt(zmq.ZAP_DOMAIN, b"*")
    provider = authenticator.credentials_providers["*"]
    assert isinstance(provider, AllowedKeys)
    return authenticator, provider
