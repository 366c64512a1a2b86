"""Overlapping reading and writing with the model's work: a reader thread that runs ahead, and
writes done behind by a thread pool, bounded and in order. Used by file and video explanation."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def default_workers(device_type: str, backend: str = "pytorch") -> int:
    """Writer threads by default: 2 when the model runs on CUDA or MPS; on the CPU 0 for
    PyTorch (its threads compete with the model's own for the same cores) and 1 for ONNX
    Runtime (whose thread pool leaves room: video at 224 px 52.9 against 40.0 fps,
    ``docs/performance.md``)."""
    if device_type != "cpu":
        return 2
    return 1 if backend == "onnxruntime" else 0


def in_background(iterator: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``iterator`` in a thread, at most ``depth`` items ahead of the consumer (decoding and
    resizing release the GIL, so reading overlaps the model's work); its errors re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    done = object()
    stop = threading.Event()

    def run() -> None:
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((done, None))
        except BaseException as exc:  # handed to the consumer
            q.put((done, exc))

    thread = threading.Thread(target=run, name="rtsal-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if item is done:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)  # it notices within 0.1 s, once its current item is made


def read_ahead(iterator: Iterator[Any], workers: int, depth: int) -> Iterator[Any]:
    """``iterator`` itself with ``workers=0``; otherwise run in a reader thread."""
    return in_background(iterator, depth) if workers > 0 else iterator


class OrderedWrites:
    """Calls done by ``workers`` threads, at most ``bound`` in flight, their errors re-raised in
    submission order; with ``workers=0`` each call runs at once in this thread. On leaving the
    block every write has finished (none is lost when the caller stops early)."""

    def __init__(self, workers: int, bound: int, name: str = "rtsal-writer") -> None:
        self.bound = max(1, bound)
        self.pool = (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) if workers else None
        )
        self.pending: deque[Future] = deque()  # oldest first

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.pool is None:
            fn(*args)
            return
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.bound:  # bounded: memory stays flat
            self.pending.popleft().result()

    def __enter__(self) -> OrderedWrites:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is None:
            return
        self.pool.shutdown(wait=True)
        while self.pending:  # re-raise the first failed write, unless already unwinding
            future = self.pending.popleft()
            if exc[0] is None:
                future.result()
