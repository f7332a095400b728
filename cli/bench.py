"""``pelletseg bench``: measure the limit, our pipeline, the peers and memory in one run."""

from __future__ import annotations

from pathlib import Path

import click

from cli.options import PRECISIONS


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
@click.option("--rows-in-flight", type=click.IntRange(1, 16), default=None,
              help="Row tasks each worker runs at once (PELLETSEG_ROWS_IN_FLIGHT; default: 1 "
                   "on CPU, 3 on CUDA, where one row's CPU work overlaps another's forward "
                   "passes).")
@click.option("--tile-size", type=int, default=None,
              help="Tile edge T (px; default the model package's).")
@click.option("--halo", type=int, default=None, help="Halo (px; default the model package's).")
@click.option("--runtime", type=click.Choice(["auto", "eager", "compile", "openvino", "onnxruntime",
                                              "tensorrt"]),
              default="auto", show_default=True,
              help="How the model runs in the pipeline, the limit and the peers (PELLETSEG_RUNTIME).")
@click.option("--reference/--no-reference", default=True, show_default=True,
              help="Also run today's path (eager fp32 at --reference-geometry) through the same "
                   "queue, alternated with the pipeline.")
@click.option("--reference-geometry", default="1024/128", show_default=True,
              help="Tile geometry T/HALO (px) of today's path.")
@click.option("--limit-seconds", type=float, default=None,
              help="Duration of each model-only throughput measurement (s).")
@click.option("--rss-sizes", default=None,
              help="Comma-separated image sizes in Gpx for the memory runs (default 0.1,0.35,1; "
                   "'' skips them).")
@click.option("--pairs", type=click.IntRange(1, 20), default=None,
              help="Alternated pipeline and MONAI runs; medians are reported (default 3).")
@click.option("--queued-jobs", type=click.IntRange(0, 50), default=0, show_default=True,
              help="Also submit this many jobs of the bench image at once (a lab's batch) and "
                   "report their throughput, reducers overlapping later jobs' rows; 0: skip.")
@click.option("--stream-reduce/--no-stream-reduce", default=None,
              help="Stitch while the rows run (PELLETSEG_STREAM_REDUCE) with a reduce worker of "
                   "its own; default: on for cuda, off for cpu.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch folder; images are kept there and reused (default ~/.pelletseg/bench).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="bf16",
              envvar="PELLETSEG_PRECISION", show_default=True,
              help="As a worker's PELLETSEG_PRECISION: autocast on CUDA; on CPU fp32 pins "
                   "float32 for a package validated for bfloat16 (cpu_precision bf16).")
def bench(quick: bool, device: str, json_path: Path, model: str | None, image_side: int | None,
          workers: int | None, rows_in_flight: int | None, tile_size: int | None,
          halo: int | None, runtime: str,
          reference: bool, reference_geometry: str, limit_seconds: float | None,
          rss_sizes: str | None, pairs: int | None, queued_jobs: int,
          stream_reduce: bool | None, work_dir: Path | None, precision: str) -> None:
    """Benchmark pelletseg on this machine against the model-only limit, today's path (eager
    fp32 at 1024/128), MONAI and a thesis-style baseline; write JSON and Markdown."""
    from benchmarks.config import BenchConfig
    from benchmarks.report import write
    from benchmarks.runner import run

    ref_geometry = _geometries(reference_geometry)[0]
    sizes = None
    if rss_sizes is not None:
        sizes = tuple(float(s) for s in rss_sizes.split(",") if s.strip())
    cfg = BenchConfig.preset(quick, device, model=model, image_side=image_side, workers=workers,
                             rows_in_flight=rows_in_flight, tile_size=tile_size, halo=halo,
                             limit_seconds=limit_seconds, rss_sizes_gpx=sizes, pairs=pairs,
                             stream_reduce=stream_reduce, queued_jobs=queued_jobs,
                             work_dir=work_dir, runtime=runtime, reference=reference,
                             reference_tile_size=ref_geometry.tile_size,
                             reference_halo=ref_geometry.halo, precision=precision)
    from models import ModelPackageError

    try:
        doc = run(cfg, say=lambda line: click.echo(line, err=True))
    except ModelPackageError as e:
        raise _bad_model(model, e) from e
    md = write(doc, json_path)
    click.echo(md.read_text())
    click.echo(f"written: {json_path} and {md}")


def _bad_model(model: str | None, e: Exception) -> click.ClickException:
    """The error of a ``--model`` that is not a usable package (exit 1, no traceback)."""
    return click.ClickException(
        f"--model {model}: {e}; give ebc-unet-mnv2, unet-resnet34 or a model package folder "
        f"(holding model.json, e.g. one written by pelletseg train)")


def _geometries(text: str) -> list:
    from core.geometry import TileGeometry

    out = []
    for item in text.split(","):
        try:
            t, h = item.strip().split("/")
            out.append(TileGeometry(int(t), int(h)))
        except ValueError as e:
            raise click.BadParameter(f"{item!r}: expected T/HALO, e.g. 1024/128 ({e})") from e
    return out


@click.command("agreement")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              required=True, help="Result file; a Markdown table is written beside it (.md).")
@click.option("--model", default="ebc-unet-mnv2", show_default=True,
              help="ebc-unet-mnv2 or a package folder.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("../shared/data"), show_default=True,
              help="Folder with lumenstone-s2/ and nasa-ebc/.")
@click.option("--geometries", default="1024/128,1024/64,1408/128,1664/64,1728/96,1792/128,2560/128",
              show_default=True, help="Tile geometries (T/halo, px) of the seam sweep.")
@click.option("--runtimes", default="eager,openvino,onnxruntime,onnxruntime-int8",
              show_default=True, help="Runtimes compared with eager fp32 (and timed per geometry); "
              "also openvino-bf16 (OpenVINO in bfloat16, whatever the package's cpu_precision; "
              "CPUs with bfloat16 units only), openvino-bf16@N (the same with the graph's "
              "first N convolutions in float32), openvino-int8[@N] (NNCF's int8 quantisation through "
              "OpenVINO, the first N convolutions in float32) and openvino-int8-ac@N (the same, "
              "with operations returned to float32 until the labels of its validation tiles "
              "hold; minutes).")
@click.option("--runtime-geometries", default=None,
              help="Geometries at which runtimes are compared (default: the package's and 1024/128).")
@click.option("--threads", type=int, default=1, show_default=True,
              help="Threads per segmenter (one worker's share of the cores).")
@click.option("--speed-seconds", type=float, default=6.0, show_default=True,
              help="Duration of each model-only speed measurement (0: none).")
@click.option("--lumenstone", type=int, default=6, show_default=True,
              help="LumenStone S2 val images used (whole).")
@click.option("--ebc-mosaics", type=int, default=3, show_default=True,
              help="2 x 2 mosaics of NASA EBC images used.")
@click.option("--device", default="cpu", show_default=True,
              help="cpu or cuda[:N]; the reference is eager float32 on it.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              show_default=True, help="Autocast of the compared runtimes on CUDA (eager included).")
@click.option("--edge-tiles", default="fitted", show_default=True,
              help="Edge-tile layouts of the geometry sweep, comma-separated: fitted (a new "
              "job's) and whole (a job's of spec version < 4); runtimes use the first.")
@click.option("--work", "work_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scratch folder (exported graphs; default ~/.pelletseg/bench/agreement).")
def agreement(json_path: Path, model: str, data_dir: Path, geometries: str, runtimes: str,
              runtime_geometries: str | None, threads: int, speed_seconds: float,
              lumenstone: int, ebc_mosaics: int, device: str, precision: str, edge_tiles: str,
              work_dir: Path | None) -> None:
    """Measure, on the real data, which tile geometries keep the whole-image labels and which
    runtimes keep eager fp32's labels; write JSON and Markdown."""
    import datetime as dt

    from benchmarks import agreement as ag
    from benchmarks.inputs import model_package
    from benchmarks.report import _plain
    from models import ModelPackageError, read_package

    work = work_dir or Path.home() / ".pelletseg" / "bench" / "agreement"
    work.mkdir(parents=True, exist_ok=True)
    try:
        package = model_package(model, work)
    except ModelPackageError as e:
        raise _bad_model(model, e) from e
    own = read_package(package).geometry
    at = _geometries(runtime_geometries) if runtime_geometries else list(
        dict.fromkeys([own, _geometries("1024/128")[0]]))
    names = [n.strip() for n in runtimes.split(",") if n.strip()]
    layouts = tuple(dict.fromkeys(e.strip() for e in edge_tiles.split(",") if e.strip()))
    if not layouts or set(layouts) - {"fitted", "whole"}:
        raise click.BadParameter(f"{edge_tiles!r}: give fitted, whole or both, "
                                 "comma-separated", param_hint="--edge-tiles")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    doc = ag.run(package, data_dir, _geometries(geometries), names, at, work, threads=threads,
                 speed_seconds=speed_seconds, lumenstone=lumenstone, ebc_mosaics=ebc_mosaics,
                 device=device, precision=precision, edge_tiles=layouts,
                 say=lambda line: click.echo(line, err=True))
    doc["date_utc"] = started
    best = {n: ag.choose(doc, n) for n in names}
    doc["fastest_geometry_at_99_9_pct"] = {
        n: (None if g is None else {"tile_size": g["tile_size"], "halo": g["halo"]})
        for n, g in best.items()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    import json

    json_path.write_text(json.dumps(_plain(doc), indent=2) + "\n")
    md = json_path.with_suffix(".md")
    md.write_text(ag.markdown(doc))
    click.echo(md.read_text())
    click.echo(f"written: {json_path} and {md}")
