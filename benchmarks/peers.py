"""Peers on the same model, image and overlap, in this process (all cores, one process).

MONAI (``monai.inferers.sliding_window_inference``, Cardoso et al., "MONAI: An open-source
framework for deep learning in healthcare", arXiv:2211.02701): ``roi_size = (T, T)``,
``sw_batch_size`` = our batch size, ``overlap = 2 * halo / T`` so its scan interval
``int(T * (1 - overlap))`` equals our stride ``T - 2 * halo``; ``mode="constant"`` (overlapping
windows' logits averaged). MONAI places windows inside the image only (the last one of each
axis shifted to the image edge, no border padding), so it may run fewer windows than our
reflect-padded tiling; both counts are reported. Its input is the decoded image already in
memory (decode time reported apart), the predictor is our model object in the same memory
format and precision, and the result is reduced to uint8 labels by the same argmax.

Thesis-style baseline: PIL ``Image.crop`` into non-overlapping T x T tiles (zero-filled past
the image edge), one tile per forward pass through the same model, label tiles concatenated.

Both run the model through the segmenter's runtime (:mod:`worker.engine.runtimes`), as our
pipeline does.
No overlap, so it runs fewer tiles than we do and has seams.
"""

from __future__ import annotations

import math
import time

import numpy as np


def monai_windows(height: int, width: int, tile: int, interval: int) -> int:
    """Windows MONAI's ``dense_patch_slices`` places on a height x width image."""
    def per_axis(n: int) -> int:
        return 1 if n <= tile else math.ceil((n - tile) / interval) + 1

    return per_axis(height) * per_axis(width)


def run_monai(segmenter, image: np.ndarray, tile: int, halo: int, batch: int) -> dict:
    """MONAI sliding-window inference of an (H, W, 3) uint8 image; see the module docstring.

    Returns:
        Seconds, Mpx/s, windows run, the overlap used, and the (H, W) uint8 labels.
    """
    import torch

    try:
        from monai.inferers import sliding_window_inference
    except ImportError as e:
        raise RuntimeError("the MONAI peer needs monai: pip install 'monai>=1.6,<1.7'") from e

    overlap = 2 * halo / tile
    interval = int(tile * (1 - overlap))
    device = segmenter.device
    amp = segmenter.amp_dtype

    model_s = [0.0]

    def predictor(window: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        if segmenter.channels_last:
            window = window.contiguous(memory_format=torch.channels_last)
        out = segmenter.forward(window)  # the package's input scale and test-time flips too
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        model_s[0] += time.perf_counter() - t0
        return out

    started = time.perf_counter()
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp, enabled=amp is not None):
        x = segmenter.normalise(torch.from_numpy(image).to(device)[None])
        logits = sliding_window_inference(x, (tile, tile), batch, predictor, overlap=overlap,
                                          mode="constant")
        labels = segmenter.labels_of(logits)[0].cpu().numpy()  # the reduction ours uses
    seconds = time.perf_counter() - started
    h, w = image.shape[:2]
    return {
        "seconds": seconds, "mpx_s": h * w / 1e6 / seconds, "overlap": overlap,
        "scan_interval": interval, "windows": monai_windows(h, w, tile, interval),
        "sw_batch_size": batch, "mode": "constant", "labels": labels,
        "model_share_pct": 100 * model_s[0] / seconds,
    }


def run_baseline(segmenter, path, tile: int) -> dict:
    """The thesis-style baseline on the image file at ``path`` (decoded by PIL first; the
    decode is timed apart).

    Returns:
        Seconds (after decoding), decode seconds, Mpx/s, tiles, and the (H, W) uint8 labels.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # our own bench image
    t0 = time.perf_counter()
    pil = Image.open(path)
    pil.load()
    decode_s = time.perf_counter() - t0
    width, height = pil.size
    started = time.perf_counter()
    rows, model_s = [], 0.0
    for y in range(0, height, tile):
        row = []
        for x in range(0, width, tile):
            crop = np.array(pil.crop((x, y, x + tile, y + tile)).convert("RGB"))
            t0 = time.perf_counter()
            row.append(segmenter.predict_tiles(crop[None])[0])
            model_s += time.perf_counter() - t0
        rows.append(np.concatenate(row, axis=1))
    labels = np.concatenate(rows, axis=0)[:height, :width]
    seconds = time.perf_counter() - started
    tiles = math.ceil(height / tile) * math.ceil(width / tile)
    return {"seconds": seconds, "decode_s": decode_s, "mpx_s": height * width / 1e6 / seconds,
            "tiles": tiles, "labels": labels, "model_share_pct": 100 * model_s / seconds}


def agreement_pct(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels (%) where two label maps agree."""
    return float((a == b).mean() * 100)
