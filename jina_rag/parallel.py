"""Encoding spread over worker processes: several CPU cores, or several GPUs, in one Python process.

For users without Ray: ``encoder.encode(texts, parallel=4)`` (or ``parallel=["cuda:0", "cuda:1"]``)
cuts the texts into contiguous shards of about equal length, each worker process (its own model,
its own share of the cores) encodes whole shards, and the results come back in input order: the
same vectors a single process gives. Workers start once per encoder and stay until
:meth:`JinaEncoder.close` (or the interpreter's exit), so only the first call pays their start.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from jina_rag.errors import InvalidInputError, InvalidTypeError, JinaRagError

logger = logging.getLogger(__name__)

T = TypeVar("T")
Parallel = int | Sequence[str] | None
# One shard per worker: a shard is batched on its own, and smaller shards of mixed lengths pad more
# (four shards per worker ran 0.74x one process on 2 cores, one shard 0.93x; benchmarks/parallel.py).
SHARDS_PER_WORKER = 1

# The encoder of this worker process, made once by the pool's initializer.
_worker_encoder: Any = None


class WorkerError(JinaRagError, RuntimeError):
    """A worker process died (killed, out of memory) before finishing its shard; nothing it did is kept."""


def worker_devices(parallel: Parallel, device: str) -> list[str]:
    """One device name per worker: ``parallel`` workers on ``device``, or the listed devices."""
    if isinstance(parallel, bool) or parallel is None:
        raise InvalidTypeError(f"parallel must be a number of workers or a list of devices, got {parallel!r}")
    if isinstance(parallel, int):
        if parallel < 1:
            raise InvalidInputError(f"parallel must be >= 1 worker, got {parallel}")
        return [device] * parallel
    if isinstance(parallel, str) or not all(isinstance(name, str) for name in parallel):
        raise InvalidTypeError(f"parallel must be a number of workers or a list of device names, got {parallel!r}")
    if not parallel:
        raise InvalidInputError("parallel is an empty list of devices: name at least one (e.g. ['cuda:0', 'cuda:1'])")
    return list(parallel)


def check_parallel(parallel: Parallel) -> None:
    """Refuse a bad ``parallel`` up front, also where the work turns out too small to spread."""
    if parallel is not None:
        worker_devices(parallel, "cpu")


def shard_bounds(weights: Sequence[int], shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges over the items, ``shards`` of them at most, of about equal weight."""
    total = sum(weights)
    bounds, start, done = [], 0, 0
    for index, weight in enumerate(weights):
        done += weight
        if done * shards >= total * (len(bounds) + 1) and index + 1 < len(weights):
            bounds.append((start, index + 1))
            start = index + 1
    bounds.append((start, len(weights)))
    return bounds


def _start_worker(make_encoder: Callable[[str], Any], devices: Any, threads: int) -> None:
    global _worker_encoder
    import torch

    device = devices.get()
    if not device.startswith("cuda"):
        torch.set_num_threads(threads)
    _worker_encoder = make_encoder(device)
    _worker_encoder.load()


def _run_shard(
    function: Callable[..., tuple[list[T], int]], items: list[Any], first_index: int, kwargs: dict[str, Any],
) -> tuple[list[T], int]:
    return function(_worker_encoder, items, first_index, **kwargs)


class EncoderPool:
    """Worker processes, each holding an encoder made by ``make_encoder(device)`` (picklable); CPU
    workers share the cores (``threads`` torch threads each, default: cores // CPU workers)."""

    def __init__(self, make_encoder: Callable[[str], Any], devices: Sequence[str], threads: int | None = None) -> None:
        context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools and locks
        queue = context.Queue()
        for device in devices:
            queue.put(device)
        cpu_workers = sum(not device.startswith("cuda") for device in devices)
        threads = threads or max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        self.devices = list(devices)
        self.broken = False
        self._executor = ProcessPoolExecutor(
            len(devices), mp_context=context, initializer=_start_worker, initargs=(make_encoder, queue, threads)
        )
        logger.info("started %d encoder workers (%s; %d torch threads each on CPU)", len(devices), ", ".join(devices), threads)

    def map(
        self,
        function: Callable[..., tuple[list[T], int]],
        items: Sequence[Any],
        weights: Sequence[int],
        on_shard: Callable[[int, int, int], None] | None = None,
        **kwargs: Any,
    ) -> list[T]:
        """``function(encoder, shard, first_index, **kwargs) -> (results, tokens)`` over contiguous
        shards of ``items`` (``first_index``: the shard's start) in the workers; the per-item results in input order. ``on_shard(start, stop,
        tokens)`` follows the shards as they finish, in order."""
        bounds = shard_bounds(weights, len(self.devices) * SHARDS_PER_WORKER)
        futures = []
        try:
            futures.extend(self._executor.submit(_run_shard, function, list(items[a:b]), a, kwargs) for a, b in bounds)
            results: list[T] = []
            for (start, stop), future in zip(bounds, futures):
                shard_results, tokens = future.result()
                results.extend(shard_results)
                if on_shard is not None:
                    on_shard(start, stop, tokens)
        except BrokenProcessPool as error:
            self.close()
            self.broken = True
            raise WorkerError(
                "an encoder worker process died (killed, out of memory, or failed to start: a script using "
                "parallel= must run its work under `if __name__ == \"__main__\":`, as multiprocessing's spawn "
                "requires): nothing of this call was kept; retry (new workers start), with fewer workers or a "
                "smaller batch if memory ran out"
            ) from error
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        return results

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
