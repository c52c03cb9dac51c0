"""Process-level OS settings for the long-running commands (broker, worker, serve).

* The open-file limit: every peer of the broker (client or worker connection) holds one file
  descriptor. At the usual default soft limit of 1024 (systemd's, most shells') the broker
  runs out after ~1,000 peers, and libzmq then retries the failing accept() in a busy loop:
  100 % CPU, and no new client or restarted worker gets in. The soft limit is raised to the
  hard limit at start-up.
* Children of `zmq-ik serve` die with it: a supervisor killed outright (SIGKILL, OOM killer)
  must not leave its broker holding the port, nor workers serving a broker nobody watches.
* A worker stopped during its warm-up exits without waiting for the compiles it abandoned
  (`exit_now`).
* Compiling threads yield the CPU to serving ones (`lower_thread_priority`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

logger = logging.getLogger(__name__)

PARENT_ENV = "ZMQ_IK_SUPERVISOR_PID"
"""Set by the supervisor in its children's environment: the pid they must not outlive."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_FD_RESERVE = 32
"""Descriptors a process keeps for itself besides its peers (libzmq's mailboxes and epoll,
logs, the Python runtime)."""


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft before, soft now).

    (-1, -1) where the platform has no such limit (Windows)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return -1, -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft, soft
    # Linux never reports an infinite hard limit here; macOS does, and refuses it as a soft one.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        logger.warning("cannot raise the open-file limit from %d to %d: %s", soft, target, e)
        return soft, soft
    return soft, target


EXIT_CONFIG = 78
"""Exit status of a process that cannot run as configured (sysexits' EX_CONFIG: a URDF or end
effector that does not load, a broker refusing the worker for good). Restarting would only
fail again, so `serve`'s supervisor and systemd (``RestartPreventExitStatus``) stop."""


def raise_fd_limit_logged(peers: bool = False) -> None:
    """`raise_fd_limit` at the start of a long-running command (children inherit it); with
    ``peers`` (the broker) log about how many connections fit, as a warning below 1,000."""
    before, after = raise_fd_limit()
    if after != before:
        logger.debug("open-file limit raised from %d to %d", before, after)
    if not peers or after < 0:
        return
    room = peer_room(after)
    log = logger.warning if room < 1000 else logger.info
    log(
        "open-file limit %d: room for about %d peers (clients and workers)%s",
        after,
        room,
        " (raise the hard limit: LimitNOFILE=, ulimit -Hn)" if room < 1000 else "",
    )


def open_fds() -> int:
    """File descriptors this process holds now (0 where /proc/self/fd cannot be read)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def peer_room(soft_limit: int) -> int:
    """About how many more connections fit under ``soft_limit`` (one descriptor each)."""
    return max(0, soft_limit - open_fds() - _FD_RESERVE)


def die_with_parent_from_env() -> None:
    """If a supervisor started this process (`PARENT_ENV` set), exit when it does."""
    value = os.environ.pop(PARENT_ENV, None)  # not inherited by anything this process starts
    if not value:
        return
    try:
        parent = int(value)
    except ValueError:
        logger.warning("ignoring %s=%r: not a process id", PARENT_ENV, value)
        return
    die_with_parent(parent)


def die_with_parent(parent: int, interval: float = 1.0) -> None:
    """Be killed when process ``parent`` exits, however it exits.

    Linux: the kernel sends SIGKILL on the parent's exit (PR_SET_PDEATHSIG; note: on the exit
    of the parent *thread* that started this process). Elsewhere, or if prctl fails, a daemon
    thread checks every ``interval`` seconds that the parent is still ours. Either way, a
    parent already gone before this call ends the process at once.
    """
    if _set_pdeathsig(signal.SIGKILL):
        if os.getppid() != parent:  # it died before prctl took effect: no signal will come
            _parent_gone(parent)
        return
    watch_parent(parent, interval)


def watch_parent(parent: int, interval: float = 1.0) -> threading.Thread:
    """The portable fallback: a daemon thread that ends this process once its parent is no
    longer ``parent`` (orphans are re-parented to init or a subreaper)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        _parent_gone(parent)

    thread = threading.Thread(target=watch, name="zmq-ik-parent-watch", daemon=True)
    thread.start()
    return thread


def _set_pdeathsig(sig: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _parent_gone(parent: int) -> None:
    logger.error("supervisor (pid %d) is gone: exiting", parent)
    os._exit(1)  # no clean-up: nobody is left to wait for it, and the port must come free


def exit_now(code: int) -> NoReturn:
    """Exit with ``code`` at once, not waiting for other threads: an XLA compile a stopped
    worker abandoned cannot be interrupted and would hold a normal exit (which joins them)
    for as long as a bucket takes to compile, up to minutes. Logs and stdio are flushed
    first; nothing else is left to clean up (the sockets are closed)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing to lose
            pass
    os._exit(code)


COMPILE_NICE = 10
"""Niceness of the threads that compile ahead of need (a worker's warm-up, its compiles after
READY, `ik.warmup`'s): they yield the CPU to a serving worker on the same host, whose
heartbeats would otherwise wait behind them (a serving worker declared dead while two others
compiled beside it; docs/reliability.md). At nice 10 a thread gets ~1/10 of a nice-0
thread's share of a busy CPU, and all of an idle one."""


def lower_thread_priority() -> None:
    """Give the calling thread (alone: on Linux niceness is per thread, and threads it
    starts inherit it) at least `COMPILE_NICE`. Raising niceness needs no privilege, but
    lowering it again would, so only threads that do nothing else call this. Best effort:
    where threads cannot be reniced (not Linux) compiles simply keep their priority."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < COMPILE_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, COMPILE_NICE)
    except (AttributeError, OSError) as exc:
        logger.debug("compile thread keeps its priority (%s)", exc)
