"""Blob keys of the storage layout (ARCHITECTURE.md, "Storage layout"). Deterministic: a rerun
of any task writes the same keys, so it finds its own checkpoints."""

from __future__ import annotations

from storage.blobs.store import check_key

LABELS = "labels.tif"
OVERLAY = "overlay.tif"
PREVIEW = "preview.png"
FRACTIONS_JSON = "fractions.json"
FRACTIONS_CSV = "fractions.csv"
SOURCE = "source.tif"
#: The converted source's no-data mask (pixels no image covers), where it has any.
NODATA = "nodata.tif"
#: The source identity (``outputs["source_identity"]``) the converted source and the no-data
#: mask were made from, written by the planner after them: a planning attempt that finds it
#: absent or different makes them again (worker/stages/planning.py).
DERIVED_FROM = "derived_from.json"
#: Microstructure outputs (microstructure.render_outputs), written by the reducer.
MICROSTRUCTURE_JSON = "microstructure.json"
MICROSTRUCTURE_FILES = (MICROSTRUCTURE_JSON, "pellets.csv", "size_distributions.csv",
                        "boundaries.csv", "radial_profiles.csv", "radial_profiles.png")
OUTPUT_FILES = (LABELS, OVERLAY, PREVIEW, FRACTIONS_JSON, FRACTIONS_CSV, *MICROSTRUCTURE_FILES)
#: The outputs stitched from the row strips (a streaming stitcher may store them early).
PICTURES = (LABELS, OVERLAY, PREVIEW)
#: A streaming stitcher's record of the rows its pictures were stitched from (worker/stages/streaming.py).
STITCH_MANIFEST = "stitched.json"
#: Object tag of row checkpoints on S3: the bucket's ``row-checkpoints`` lifecycle rule
#: (terraform/modules/storage) selects ``jobs/`` objects with this tag, since S3 lifecycle
#: filters take no wildcard for ``jobs/*/rows/``.
ROW_CHECKPOINT_TAG = {"pelletseg-object": "row-checkpoint"}
#: Per-pixel confidence (uint8 max softmax probability) pyramid and its per-class summary.
CONFIDENCE = "confidence.tif"
CONFIDENCE_JSON = "confidence.json"
#: Outputs a job may lack (jobs from before they existed, rows checkpointed without them):
#: listed and served where present, never required.
OPTIONAL_OUTPUTS = (CONFIDENCE, CONFIDENCE_JSON)


def job_prefix(job_id: str) -> str:
    """``jobs/{job_id}``"""
    return check_key(f"jobs/{job_id}")


def row_key(job_id: str, index: int) -> str:
    """``jobs/{job_id}/rows/{index:05d}.tif``: the row's uint8 label strip checkpoint."""
    return f"{job_prefix(job_id)}/rows/{index:05d}.tif"


def row_partial_key(job_id: str, index: int) -> str:
    """``jobs/{job_id}/rows/{index:05d}.micro.npz``: the row's microstructure partial
    (``microstructure.RowPartial.to_bytes``), beside its label strip checkpoint."""
    return f"{job_prefix(job_id)}/rows/{index:05d}.micro.npz"


def output_key(job_id: str, name: str) -> str:
    """``jobs/{job_id}/{name}`` for one of :data:`OUTPUT_FILES`, :data:`OPTIONAL_OUTPUTS`,
    :data:`SOURCE` or :data:`STITCH_MANIFEST`."""
    return check_key(f"{job_prefix(job_id)}/{name}")


def confidence_row_key(job_id: str, index: int) -> str:
    """``jobs/{job_id}/rows/{index:05d}.confidence.tif``: the row's uint8 confidence strip,
    written before its label checkpoint (so a label checkpoint of a new job implies it)."""
    return f"{job_prefix(job_id)}/rows/{index:05d}.confidence.tif"


def upload_key(job_id: str, filename: str) -> str:
    """``uploads/{job_id}/{filename}``"""
    return check_key(f"uploads/{job_id}/{filename}")


def model_prefix(name: str, version: str) -> str:
    """``models/{name}/{version}``"""
    return check_key(f"models/{name}/{version}")


def confidence_counts_key(job_id: str, index: int) -> str:
    """``jobs/{job_id}/rows/{index:05d}.confidence-counts.npy``: the row's (C, 256) int64
    pixel counts by (class, confidence value), written with its confidence strip (before
    it), so the reducer sums them instead of reading every strip again."""
    return f"{job_prefix(job_id)}/rows/{index:05d}.confidence-counts.npy"


def thumbnail_row_key(job_id: str, index: int) -> str:
    """``jobs/{job_id}/rows/{index:05d}.thumbnail.png``: the row's source rows shrunk for the
    preview (``imaging.rendering.shrink_rows``), written before its label checkpoint, so the
    preview need not decode the whole source again."""
    return f"{job_prefix(job_id)}/rows/{index:05d}.thumbnail.png"


def inference_row_key(job_id: str, index: int) -> str:
    """``jobs/{job_id}/rows/{index:05d}.inference.json``: how the row's labels were computed
    (``worker.engine.segmenter.Segmenter.inference``), written before its label checkpoint,
    so a rerun that reuses the checkpoint records the same as the run that computed it."""
    return f"{job_prefix(job_id)}/rows/{index:05d}.inference.json"


def row_blob_keys(job_id: str, index: int) -> tuple[str, ...]:
    """Every object a row leaves under ``jobs/{job_id}/rows/`` once done: label strip,
    confidence strip and count table, source thumbnail, how it was computed, microstructure
    partial."""
    return (row_key(job_id, index), confidence_row_key(job_id, index),
            confidence_counts_key(job_id, index), thumbnail_row_key(job_id, index),
            inference_row_key(job_id, index), row_partial_key(job_id, index))
