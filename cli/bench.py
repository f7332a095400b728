"""``pelletseg bench``: measure the limit, our pipeline, the peers and memory in one run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("bench")
@click.option("--quick", is_flag=True, help="The short preset (under 10 minutes on 2 CPU cores).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Device of the model (the same for every measurement).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Result file; a Markdown table is written beside it (.md).")
@click.option("--model", default=None,
              help="ebc-unet-mnv2, unet-resnet34 (random init) or a package folder "
                   "(default: ebc-unet-mnv2 on CPU, unet-resnet34 on CUDA).")
@click.option("--image-side", type=int, default=None, help="Edge of the square bench image (px).")
@click.option("--workers", type=int, default=None,
              help="Worker processes (default: cores on CPU, 1 on CUDA).")
@click.option("--tile-size", type=int, default=None, help="Tile edge T (px; default 1024).")
@click.option("--halo", type=int, default=None, help="Halo (px; default 128).")
@click.option("--limit-seconds", type=float, default=None,
              help="Duration of each model-only throughput measurement (s).")
@click.option("--rss-sizes", default=None,
              help="Comma-separated image sizes in Gpx for the memory runs (default 0.1,0.35,1; "
                   "'' skips them).")
@click.option("--pairs", type=click.IntRange(1, 20), default=None,
              help="Alternated pipeline and MONAI runs; medians are reported (default 3).")
@click.option("--stream-reduce/--no-stream-reduce", default=None,
              help="Stitch while the rows run (PELLETSEG_STREAM_REDUCE) with a reduce worker of "
                   "its own; default: on for cuda, off for cpu.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch folder; images are kept there and reused (default ~/.pelletseg/bench).")
def bench(quick: bool, device: str, json_path: Path, model: str | None, image_side: int | None,
          workers: int | None, tile_size: int | None, halo: int | None,
          limit_seconds: float | None, rss_sizes: str | None, pairs: int | None,
          stream_reduce: bool | None, work_dir: Path | None) -> None:
    """Benchmark pelletseg on this machine against the model-only limit, MONAI and a
    thesis-style baseline; write JSON and Markdown."""
    from benchmarks.config import BenchConfig
    from benchmarks.report import write
    from benchmarks.runner import run

    sizes = None
    if rss_sizes is not None:
        sizes = tuple(float(s) for s in rss_sizes.split(",") if s.strip())
    cfg = BenchConfig.preset(quick, device, model=model, image_side=image_side, workers=workers,
                             tile_size=tile_size, halo=halo, limit_seconds=limit_seconds,
                             rss_sizes_gpx=sizes, pairs=pairs, stream_reduce=stream_reduce,
                             work_dir=work_dir)
    doc = run(cfg, say=lambda line: click.echo(line, err=True))
    md = write(doc, json_path)
    click.echo(md.read_text())
    click.echo(f"written: {json_path} and {md}")
