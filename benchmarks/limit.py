"""The limit: model-only throughput on tile batches already in device memory.

What is timed: :meth:`worker.engine.segmenter.Segmenter.labels_on_device` (normalise, forward pass,
argmax to uint8 labels, all on the device), repeated on one batch of real tiles of the bench
image; no reading, padding, host transfer or writing. Mpx/s counts *output* pixels, i.e. a
tile's core (stride x stride), so the overlap's cost is in the limit as in the pipeline.

On CPU the pipeline runs N worker processes with cores / N threads each; the limit is
measured the same way (N processes at once, released together by a barrier, their rates
summed), so that pipeline / limit isolates what the pipeline adds. The single-process,
all-cores rate is measured too: it is the comparison for in-process runs (segment_row alone,
the peers).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_rate(segmenter, batches: np.ndarray, seconds: float, min_batches: int = 3) -> dict:
    """Time :meth:`Segmenter.labels_on_device` on batches already in device memory, cycling
    through them, until ``seconds`` have passed (and at least ``min_batches`` batches), after
    two warm-up batches.

    Several different real tiles are cycled because the model's speed on CPU depends on the
    content (by about 10 % here: e.g. subnormal activations), so one tile is not
    representative of an image.

    Args:
        segmenter: A loaded :class:`worker.engine.segmenter.Segmenter`.
        batches: (K, N, T, T, 3) uint8 tiles: K batches of N = the batch size.
        seconds: Minimum measuring time (s).

    Returns:
        ``{"tiles": int, "seconds": float, "tiles_s": float}``.
    """
    import torch

    xs = [torch.from_numpy(np.ascontiguousarray(b)).to(segmenter.device) for b in batches]
    for k in range(2):
        segmenter.labels_on_device(xs[k % len(xs)])
    _sync(segmenter.device)
    done, tiles, started = 0, 0, time.perf_counter()
    while done < min_batches or time.perf_counter() - started < seconds:
        x = xs[done % len(xs)]
        segmenter.labels_on_device(x)
        done += 1
        tiles += len(x)
        if segmenter.device.type == "cuda" and done % 8 == 0:
            _sync(segmenter.device)  # keep the host from running far ahead of the clock
    _sync(segmenter.device)
    spent = time.perf_counter() - started
    return {"tiles": tiles, "seconds": spent, "tiles_s": tiles / spent}


def _process(package: str, device: str, threads: int, batch: int, precision: str,
             tiles: np.ndarray, seconds: float, barrier, results, runtime: str,
             cache_dir: str | None) -> None:
    from worker.engine.segmenter import Segmenter

    seg = Segmenter(package, device=device, threads=threads, batch_size=batch,
                    precision=precision, runtime=runtime, cache_dir=cache_dir)
    forward_rate(seg, tiles, 0.0, min_batches=1)  # load and warm up before the common start
    barrier.wait()
    results.put(forward_rate(seg, tiles, seconds))


def pooled_rate(package: Path, device: str, processes: int, threads: int, batch: int,
                precision: str, tiles: np.ndarray, seconds: float, runtime: str = "eager",
                cache_dir: Path | None = None) -> dict:
    """Model-only rate of ``processes`` processes running at once (``threads`` each), each
    cycling through ``tiles`` (see :func:`forward_rate`), through ``runtime``
    (:mod:`worker.engine.runtimes`; exported graphs under ``cache_dir``).

    Returns:
        ``{"processes", "threads", "tiles_s", "per_process_tiles_s"}`` (rates summed).

    Raises:
        RuntimeError: a measuring process failed.
    """
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(str(package), device, threads, batch, precision,
                                                tiles, seconds, barrier, results, runtime,
                                                None if cache_dir is None else str(cache_dir)))
             for _ in range(processes)]
    for p in procs:
        p.start()
    rates = []
    try:
        for _ in procs:
            rates.append(results.get(timeout=600 + 4 * seconds))
    except Exception as e:  # queue.Empty: a child died before reporting
        codes = [p.exitcode for p in procs]
        raise RuntimeError(f"a limit process failed: exit codes {codes}") from e
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    per = [r["tiles_s"] for r in rates]
    return {"processes": processes, "threads": threads, "tiles_s": sum(per),
            "per_process_tiles_s": per}


def tile_batches(image: np.ndarray, tile_size: int, batch: int, tiles: int = 8) -> np.ndarray:
    """Real T x T tiles of the image, spread along its diagonal, as
    (max(1, ceil(tiles / batch)), batch, T, T, 3) uint8 (reflect-padded if the image is
    smaller than a tile)."""
    h, w = image.shape[:2]
    k = max(1, math.ceil(tiles / batch))
    n = k * batch
    out = []
    for i in range(n):
        y = round(i * max(0, h - tile_size) / max(1, n - 1))
        x = round(i * max(0, w - tile_size) / max(1, n - 1))
        tile = image[y : y + tile_size, x : x + tile_size]
        if tile.shape[:2] != (tile_size, tile_size):
            tile = np.pad(tile, [(0, tile_size - tile.shape[0]), (0, tile_size - tile.shape[1]),
                                 (0, 0)], mode="reflect")
        out.append(tile)
    return np.stack(out).reshape(k, batch, tile_size, tile_size, 3)


def to_mpx_s(tiles_s: float, stride: int) -> float:
    """Output megapixels per second: each tile yields a stride x stride core."""
    return tiles_s * stride * stride / 1e6
