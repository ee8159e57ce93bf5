"""Run independent tasks in forked worker processes and collect their results in order
of arrival.

Sensitivity analysis evaluates every (group, ratio) pair on its own; Paddle's CPU
kernels gain little from more threads, so splitting the groups over processes is
what makes the other cores useful.
Forking shares everything the parent has at that moment - the network, ``eval_fn``
and its data - without pickling, and a worker's changes stay in the worker.

    >>> def squares(n):
    ...     for k in range(n):
    ...         yield k * k
    >>> got = []
    >>> run_forked([3, 2], squares, workers=2, on_result=lambda n, r: got.append((n, r)))
    >>> sorted(got)
    [(2, 0), (2, 1), (3, 0), (3, 1), (3, 4)]
"""
from __future__ import annotations

import gc
import multiprocessing
import pickle
import sys
import traceback
from multiprocessing.connection import wait
from typing import Callable, Iterable, Sequence, TypeVar

import paddle

from slim_callbacks.core.checks import check_int
from slim_callbacks.core.errors import ConfigError, SlimError

Task = TypeVar("Task")
Result = TypeVar("Result")


def fork_available() -> bool:
    """True where processes can be forked (Linux, macOS), which ``workers > 1`` needs."""
    return "fork" in multiprocessing.get_all_start_methods()


def check_workers(workers) -> int:
    """``workers`` is an int >= 1, and > 1 only where forking a CPU process is safe."""
    check_int("workers", workers, 1, "an int >= 1 (processes evaluating side by side)")
    if workers > 1:
        if not fork_available():
            raise ConfigError("workers", workers, "1 on this platform (worker processes need os.fork)")
        if not paddle.device.get_device().startswith("cpu"):
            raise ConfigError("workers", workers, f"1 on {paddle.device.get_device()} "
                                                  f"(forked processes cannot use the device)")
        if paddle.distributed.get_world_size() > 1:
            raise ConfigError("workers", workers, "1 under data parallel (each rank is one process)")
    return int(workers)


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as its ``__cause__``."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f"\n\"\"\"\n{self.text}\"\"\""


_INHERITED: list = []


def _keep_inherited_objects() -> None:
    """Never free, in a forked worker, objects whose destructors join the parent's
    threads (threads do not survive a fork: joining one aborts or hangs the worker).
    Paddle keeps the last ``paddle.io.DataLoader`` iterator in a module global and
    frees it when the next one starts, as ``eval_fn`` does on its first batch; garbage
    collection of the parent's other objects is switched off by ``gc.freeze``."""
    gc.freeze()
    dataloader_iter = sys.modules.get("paddle.io.dataloader.dataloader_iter")
    if getattr(dataloader_iter, "_loader", None) is not None:
        _INHERITED.append(dataloader_iter._loader)


def _worker(tasks: Sequence, work: Callable, counter, conn) -> None:
    """Takes the next task index from ``counter`` until none are left; sends
    ``("result", index, result)`` for each result, then ``("done",)``, or
    ``("error", index, pickled exception or None, traceback)``."""
    index = None
    try:
        _keep_inherited_objects()
        while True:
            with counter.get_lock():
                index = counter.value
                counter.value += 1
            if index >= len(tasks):
                break
            for result in work(tasks[index]):
                conn.send(("result", index, result))
        conn.send(("done",))
    except BaseException as err:  # noqa: BLE001 - every failure goes to the parent
        try:
            payload = pickle.dumps(err)
        except Exception:  # noqa: BLE001 - an unpicklable exception travels as text
            payload = None
        conn.send(("error", index, payload, traceback.format_exc()))
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def _raise_remote(tasks: Sequence, message: tuple) -> None:
    _, index, payload, text = message
    err = None
    if payload is not None:
        try:
            err = pickle.loads(payload)
        except Exception:  # noqa: BLE001
            err = None
    if not isinstance(err, BaseException):
        where = (f"on task {tasks[index]!r}" if index is not None and index < len(tasks)
                 else "between tasks")
        err = SlimError(f"a worker failed {where}: {text.strip().splitlines()[-1]}")
    raise err from RemoteTraceback(text)


def run_forked(tasks: Sequence[Task], work: Callable[[Task], Iterable[Result]], workers: int,
               on_result: Callable[[Task, Result], None]) -> None:
    """Runs ``work(task)`` for every task in ``workers`` forked processes.

    Tasks are handed out in order, one at a time, to whichever worker is free, so put
    the longest first. ``on_result(task, result)`` runs in this process for every
    result as it arrives. The first failure stops every worker and is raised here: the
    worker's exception (with its traceback as ``__cause__``) or a :class:`SlimError`
    when a worker died without one (killed, out of memory, ``os._exit``).

    Args:
        tasks: picklable or not - workers get them by forking, not by pickling.
        work: a generator function; results must be picklable.
        workers: number of processes, at least 1 (1 still forks one).
        on_result: called in the parent, in order of arrival.
    """
    if not fork_available():
        raise SlimError("worker processes need os.fork, which this platform lacks; use workers=1")
    ctx = multiprocessing.get_context("fork")
    counter = ctx.Value("q", 0)
    processes, readers = [], {}
    try:
        for number in range(min(workers, len(tasks))):
            reader, writer = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_worker, args=(tasks, work, counter, writer),
                                  name=f"slim_callbacks-worker-{number}", daemon=False)
            process.start()
            writer.close()  # the worker holds the only writing end: EOF when it dies
            processes.append(process)
            readers[reader] = process
        while readers:
            for conn in wait(list(readers)):
                try:
                    message = conn.recv()
                except EOFError:
                    process = readers.pop(conn)
                    process.join()
                    raise SlimError(f"worker process {process.name} stopped without a result "
                                    f"(exit code {process.exitcode}): killed, out of memory, or "
                                    f"eval_fn ended the process") from None
                if message[0] == "result":
                    on_result(tasks[message[1]], message[2])
                elif message[0] == "done":
                    readers.pop(conn).join()
                    conn.close()
                else:
                    _raise_remote(tasks, message)
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()  # not SIGTERM: Paddle's handler for it can deadlock a fresh fork
        for process in processes:
            process.join()
        for conn in readers:
            conn.close()

