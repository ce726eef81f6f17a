"""Where requests run: a local process pool or a Ray cluster, behind one small interface.

Both take the same job (settings + spec options) and the same tasks, give results back as plain
dicts, and stop submitting the moment the caller says so (a budget stop): what is in flight finishes
and is kept. Scaling past one machine is Ray's job: ``ray.init()`` starts a local cluster, and
``RAY_ADDRESS`` joins an existing one; nothing here schedules, queues or retries on its own.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

OnResult = Callable[[dict[str, Any]], bool]  # returns False to stop submitting


class Executor(abc.ABC):
    name: ClassVar[str] = ""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)

    @abc.abstractmethod
    def run(self, job: dict[str, Any], tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        """Run ``tasks`` (at most ``2 x workers`` in flight); hand each result to ``on_result``."""


class LocalExecutor(Executor):
    """A pool of ``spawn``-ed processes, each with its own Gateway (torch and fork do not mix)."""

    name = "local"

    def run(self, job: dict[str, Any], tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        import multiprocessing as mp
        from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

        from .worker import init_process, run_in_process

        pending: set[Future[dict[str, Any]]] = set()
        source: Iterator[dict[str, Any]] = iter(tasks)
        going = True
        with ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=mp.get_context("spawn"),
            initializer=init_process,
            initargs=(job,),
        ) as pool:
            while True:
                while going and len(pending) < 2 * self.workers:
                    task = next(source, None)
                    if task is None:
                        going = False
                        break
                    pending.add(pool.submit(run_in_process, task))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    if not on_result(fut.result()):
                        going = False


class RayExecutor(Executor):
    """``workers`` Ray actors, each holding a Gateway; results come back as they finish."""

    name = "ray"

    def run(self, job: dict[str, Any], tasks: Iterable[dict[str, Any]], on_result: OnResult) -> None:
        import os

        import ray
        from ray.util import ActorPool

        from .worker import Worker

        started = False
        if not ray.is_initialized():
            ray.init(
                address=os.environ.get("RAY_ADDRESS") or None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            started = True
        try:
            actor_cls = ray.remote(num_cpus=0)(Worker)
            actors = [actor_cls.remote(job) for _ in range(self.workers)]
            pool = ActorPool(actors)
            source = iter(tasks)
            going, in_flight = True, 0
            while True:
                while going and in_flight < 2 * self.workers:
                    task = next(source, None)
                    if task is None:
                        going = False
                        break
                    pool.submit(lambda actor, t: actor.run.remote(t), task)
                    in_flight += 1
                if not in_flight:
                    break
                result = pool.get_next_unordered()
                in_flight -= 1
                if not on_result(result):
                    going = False
            ray.get([actor.close.remote() for actor in actors])  # type: ignore[attr-defined]
        finally:
            if started:
                ray.shutdown()


EXECUTORS: dict[str, type[Executor]] = {cls.name: cls for cls in (LocalExecutor, RayExecutor)}


def executor(name: str, workers: int) -> Executor:
    from ..errors import UsageError

    cls = EXECUTORS.get(name)
    if cls is None:
        raise UsageError(f"unknown executor {name!r}: use {' or '.join(EXECUTORS)}")
    if name == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("the ray executor needs Ray: pip install 'diffusion-gateway[ray]'")
    return cls(workers)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "RayExecutor", "executor"]
