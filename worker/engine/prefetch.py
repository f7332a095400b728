"""Read-ahead of a strip's input: tile-row *bands* produced by a reader thread while the
device works on the previous ones.

A band is the (tile rows, band width, 3) input that every tile of one tile row is cut
from (see :func:`worker.engine.tiling.band_row_sources`). :func:`iter_bands` reads each image
row once (consecutive bands share ``2 * halo`` rows: the shared rows are kept, not re-read)
and :class:`Prefetcher` runs it in a background thread. pyvips (libvips decoding) and numpy's
copies release the GIL, so reading band k+1 really overlaps the forward pass of band k, on
CPU and GPU alike.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

import numpy as np

from worker.engine.tiling import TileGrid, band_row_sources, pad_columns

T = TypeVar("T")

#: ``rows(lo, hi)`` -> (hi - lo, W, C) image rows ``[lo, hi)``.
RowsFn = Callable[[int, int], np.ndarray]


def region_rows(region: np.ndarray, r0: int) -> RowsFn:
    """A :data:`RowsFn` over an in-memory region holding image rows ``[r0, r0 + len)``."""

    def rows(lo: int, hi: int) -> np.ndarray:
        if lo < r0 or hi > r0 + region.shape[0]:
            raise IndexError(
                f"rows [{lo}, {hi}) outside the region's [{r0}, {r0 + region.shape[0]})")
        return region[lo - r0 : hi - r0]

    return rows


def iter_bands(rows: RowsFn, grid: TileGrid, y0: int, y1: int) -> Iterator[np.ndarray]:
    """Yield the padded input band of each tile row of output rows ``[y0, y1)``.

    Band ``j`` equals ``strip_bands(region, grid, y0, y1)[j]``
    (:func:`worker.engine.tiling.strip_bands`) exactly (same reflect padding), but only the
    image rows it needs are read, and the rows it shares with band ``j - 1`` are taken from
    the previous read.

    Args:
        rows: Reads image rows (e.g. :func:`imaging.reading.image_rows` or
            :func:`region_rows`).
        grid: The image's tile grid.
        y0, y1: Output rows of the strip (px).

    Yields:
        (tile rows, ``grid.band_width``, C) arrays, top to bottom.
    """
    kept, kept_lo = None, 0  # image rows [kept_lo, kept_lo + len(kept)) from the last read
    for sources in band_row_sources(grid, y0, y1):
        lo, hi = int(sources.min()), int(sources.max()) + 1
        kept_hi = kept_lo + (0 if kept is None else kept.shape[0])
        if kept is not None and kept_lo <= lo <= kept_hi:
            parts = [kept[lo - kept_lo : min(hi, kept_hi) - kept_lo]]
            if hi > kept_hi:
                parts.append(rows(kept_hi, hi))
            block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        else:
            block = rows(lo, hi)
        kept, kept_lo = block, lo
        offsets = sources - lo
        if offsets[0] == 0 and np.array_equal(offsets, np.arange(offsets.shape[0])):
            picked = block[: offsets.shape[0]]  # interior band: a plain slice, no gather
        else:
            picked = block[offsets]
        yield pad_columns(picked, grid)


class Prefetcher(Generic[T]):
    """Iterate ``source`` in a background thread, up to ``depth`` items ahead of the consumer.

    Items come out in order; an exception raised by ``source`` is re-raised in the consumer
    at the point where its item would have come. ``depth = 0`` iterates in the calling thread
    (no thread, no overlap). Use as a context manager (or call :meth:`close`) so that a
    consumer that stops early also stops the thread.

    Attributes:
        busy_s: Seconds the producer spent producing items (read time).
        wait_s: Seconds the consumer spent blocked waiting for an item (read time that did
            not overlap with the consumer's work).
    """

    _DONE = object()

    def __init__(self, source: Iterable[T], depth: int = 2, name: str = "prefetch"):
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.depth = depth
        self.busy_s = 0.0
        self.wait_s = 0.0
        self._source = iter(source)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue: queue.Queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    item = next(self._source)
                except StopIteration:
                    break
                self.busy_s += time.perf_counter() - t0
                if not self._put((True, item)):
                    return
        except BaseException as e:
            self._put((False, e))
            return
        self._put((True, self._DONE))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        t0 = time.perf_counter()
        if self._thread is None:
            try:
                item = next(self._source)
            finally:
                spent = time.perf_counter() - t0
                self.busy_s += spent
                self.wait_s += spent
            return item
        ok, item = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if not ok:
            self._stop.set()
            raise item
        if item is self._DONE:
            self._queue.put((True, self._DONE))  # later calls stop too
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the producer thread (it finishes the item it is producing) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(0.05)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
