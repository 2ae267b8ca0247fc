"""Run one benchmark's client in a spawned process and bring its figures back.

The embedded database is a Python server on threads of the bench process; a client in that same
process would fight it for the GIL, which no deployment does (the API and the database are
separate processes), so every benchmark that talks to the database runs in a child of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from ops.bench.measure import BenchError
from server.processes import die_with_parent

Spec = TypeVar("Spec")
Figures = TypeVar("Figures")


def _child(
    work: Callable[[Spec], Coroutine[Any, Any, Any]], spec: Spec, results: Connection
) -> None:
    die_with_parent(signal.SIGTERM)
    try:
        results.send(("ok", asyncio.run(work(spec))))
    except BaseException:
        # The parent may be gone already (it stopped us); then there is no one left to tell.
        with contextlib.suppress(OSError):
            results.send(("error", traceback.format_exc(limit=8)))
        raise
    finally:
        results.close()


def run_in_child(
    work: Callable[[Spec], Coroutine[Any, Any, Figures]],
    spec: Spec,
    *,
    name: str,
    what: str,
    limit: float,
) -> Figures:
    """`asyncio.run(work(spec))` in a spawned process (`work` must be a module-level function);
    its answer, or BenchError naming `what` when it fails, dies or takes more than `limit` s."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(work, spec, sender), name=name)
    child.start()
    sender.close()
    try:
        if not receiver.poll(limit):
            raise BenchError(f"{what} gave no answer within {limit:.0f} s")
        try:
            status, value = receiver.recv()
        except EOFError:
            raise BenchError(f"{what} process died without an answer") from None
        if status != "ok":
            raise BenchError(f"{what} failed:\n{value}")
        figures: Figures = value
        return figures
    except BaseException:
        # Stopped or failed: the child's answer is no longer wanted, so it is not waited for.
        child.terminate()
        raise
    finally:
        receiver.close()
        child.join(30)
        if child.is_alive():
            child.kill()
            child.join()
