"""Process plumbing: tie a child's life to its parent, wait on signals, supervise forked workers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` when the parent dies, so nothing outlives its launcher.

    Linux only; elsewhere it does nothing and graceful shutdown relies on signals alone.
    """
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name, use_errno=True)
    parent = os.getppid()
    libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        # The parent died before prctl took effect: the signal would never come.
        os.kill(os.getpid(), sig)


def stop_event_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for the running event loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run_forked(count: int, child: Callable[[int], int]) -> int:
    """Fork `count` workers that each run `child(index)`; forward SIGTERM/SIGINT to them, restart
    one that crashes, and return once all have exited after a stop signal."""
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                die_with_parent()
                code = child(index)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for index in range(count):
        spawn(index)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    worst = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if not stopping and code != 0:
            # A worker that died on its own is replaced; the others kept serving meanwhile.
            spawn(index)
        else:
            worst = max(worst, code if code > 0 else 0)
    return worst
