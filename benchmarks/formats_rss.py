"""Peak RSS and time of converting microscope inputs to the model-ready TIFF through
:mod:`imaging.formats` (the planner's conversion), per format, at one size.

A square mosaic of the real micrographs (:func:`benchmarks.inputs.mosaic`) is written once in
each format by that format's own writer, tile by tile (the writers never hold the image):

- ``czi``: Zeiss CZI by pylibCZIrw (2048 px sub-blocks, BGR24, zstd), read with pylibCZIrw;
- ``openslide``: an Aperio-SVS-like tiled TIFF by tifffile (256 px JPEG tiles; zlib without
  imagecodecs), read through OpenSlide;
- ``ome16``: a 16-bit grey OME-TIFF by tifffile (256 px deflate tiles), read with
  tifffile/ome-types/libvips.

Then each conversion runs in a fresh process (``python -m benchmarks.formats_rss convert
SRC OUT``) whose VmHWM is reported with its wall time. Prints a Markdown table.

Usage: ``python -m benchmarks.formats_rss [--mpx 1000] [--work DIR] [--formats czi,openslide,ome16]``
(heavy: run under ``flock /work/heavy.lock nice -n 5`` on shared machines).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CZI_TILE = 2048
TILE = 256


def _bands(image, rows: int):
    """(y0, (h, W, 3) uint8) bands of a lazy libvips RGB image."""
    for y0 in range(0, image.height, rows):
        h = min(rows, image.height - y0)
        region = image.crop(0, y0, image.width, h)
        yield y0, np.ndarray(buffer=region.write_to_memory(), dtype=np.uint8,
                             shape=(h, image.width, image.bands))[..., :3]


def _tiles(image, dtype=np.uint8, grey=False):
    for _, band in _bands(image, TILE):
        if grey:
            band = (band[..., 1].astype(np.uint16) * 257)[..., None]
        h = band.shape[0]
        for x0 in range(0, image.width, TILE):
            tile = np.zeros((TILE, TILE, band.shape[2]), dtype)
            part = band[:, x0:x0 + TILE]
            tile[:h, :part.shape[1]] = part
            yield tile[..., 0] if grey else tile


def write_czi(image, path: Path) -> None:
    from pylibCZIrw import czi

    with czi.create_czi(str(path), exist_ok=True, compression_options="zstd0:ExplicitLevel=1") as w:
        for y0, band in _bands(image, CZI_TILE):
            for x0 in range(0, image.width, CZI_TILE):
                tile = np.ascontiguousarray(band[:, x0:x0 + CZI_TILE, ::-1])  # BGR
                w.write(tile, location=(x0, y0))
        w.write_metadata(scale_x=0.5e-6, scale_y=0.5e-6)


def write_svs(image, path: Path) -> None:
    import tifffile

    try:
        import imagecodecs  # noqa: F401

        compression = "jpeg"
    except ImportError:
        compression = "zlib"
    description = (f"Aperio Image Library v12.0.0\r\n{image.width}x{image.height} "
                   f"[0,0 {image.width}x{image.height}] ({TILE}x{TILE}) RGB|MPP = 0.5")
    tifffile.imwrite(path, data=_tiles(image), shape=(image.height, image.width, 3), dtype=np.uint8,
                     tile=(TILE, TILE), photometric="rgb", compression=compression,
                     description=description, metadata=None, bigtiff=True)


def write_ome16(image, path: Path) -> None:
    import tifffile

    tifffile.imwrite(path, data=_tiles(image, np.uint16, grey=True), shape=(image.height, image.width),
                     dtype=np.uint16, tile=(TILE, TILE), compression="zlib", bigtiff=True, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 0.5, "PhysicalSizeXUnit": "µm"})


WRITERS = {"czi": (write_czi, ".czi"), "openslide": (write_svs, ".svs"), "ome16": (write_ome16, ".ome.tif")}


def convert(src: str, out: str) -> None:
    """Child: the planner's conversion of ``src``; prints one JSON line."""
    from benchmarks.timing import peak_rss_mib
    from imaging.formats import source_info, write_model_ready

    started = time.perf_counter()
    info = source_info(src, max_pixels=10**11)
    write_model_ready(src, out, max_pixels=10**11)
    print(json.dumps({"format": info.format, "width": info.width, "height": info.height,
                      "pixel_size_um": info.pixel_size_um, "seconds": time.perf_counter() - started,
                      "peak_rss_mib": peak_rss_mib()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mpx", type=float, default=1000.0, help="image size (Mpx)")
    parser.add_argument("--work", type=Path, default=Path("bench-work/formats"))
    parser.add_argument("--formats", default=",".join(WRITERS))
    parser.add_argument("--keep", action="store_true", help="keep the written inputs")
    args = parser.parse_args(argv)
    import pyvips

    from benchmarks.inputs import mosaic

    side = int(math.sqrt(args.mpx * 1e6)) // TILE * TILE
    args.work.mkdir(parents=True, exist_ok=True)
    image = pyvips.Image.new_from_file(str(mosaic(args.work, side)), access="random")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    rows = []
    for name in args.formats.split(","):
        writer, suffix = WRITERS[name]
        src = args.work / f"{name}-{side}px{suffix}"
        if not src.exists():
            t0 = time.perf_counter()
            writer(image, src)
            print(f"wrote {src} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        out = args.work / f"{name}-ready.tif"
        res = subprocess.run([sys.executable, "-m", "benchmarks.formats_rss", "convert", str(src), str(out)],
                             env=env, capture_output=True, text=True, check=False)
        lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
        if res.returncode != 0 or not lines:
            raise RuntimeError(f"{name} failed ({res.returncode}): {res.stderr[-3000:]}")
        row = json.loads(lines[-1])
        row["input_mib"] = src.stat().st_size / 2**20
        rows.append((name, row))
        print(f"{name}: {json.dumps(row)}", file=sys.stderr, flush=True)
        out.unlink(missing_ok=True)
        if not args.keep:
            src.unlink(missing_ok=True)
    print(f"| input ({side} x {side} px) | read as | file MiB | peak RSS MiB | seconds |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, r in rows:
        print(f"| {name} | {r['format']} ({r['pixel_size_um']} µm/px) | {r['input_mib']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {r['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "convert":
        convert(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
