"""The blob store: one fsspec root URL (``file://``, ``s3://``, ``gs://``, ``memory://``)
holding every byte pelletseg keeps outside the job table: uploads, converted sources, row
checkpoints, outputs and model packages, under the deterministic keys of
:mod:`storage.blobs.layout`; plus resumable multipart uploads into it.
"""

from storage.blobs.layout import (
    FRACTIONS_CSV,
    FRACTIONS_JSON,
    LABELS,
    MICROSTRUCTURE_FILES,
    MICROSTRUCTURE_JSON,
    OUTPUT_FILES,
    OVERLAY,
    PICTURES,
    PREVIEW,
    ROW_CHECKPOINT_TAG,
    SOURCE,
    STITCH_MANIFEST,
    job_prefix,
    model_prefix,
    output_key,
    row_key,
    row_partial_key,
    upload_key,
)
from storage.blobs.store import BlobStore, check_key
from storage.blobs.uploads import UploadManifest, UploadStore

__all__ = [
    "FRACTIONS_CSV",
    "FRACTIONS_JSON",
    "LABELS",
    "MICROSTRUCTURE_FILES",
    "MICROSTRUCTURE_JSON",
    "OUTPUT_FILES",
    "OVERLAY",
    "PICTURES",
    "PREVIEW",
    "ROW_CHECKPOINT_TAG",
    "SOURCE",
    "STITCH_MANIFEST",
    "BlobStore",
    "UploadManifest",
    "UploadStore",
    "check_key",
    "job_prefix",
    "model_prefix",
    "output_key",
    "row_key",
    "row_partial_key",
    "upload_key",
]
