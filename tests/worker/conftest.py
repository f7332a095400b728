"""Fixtures for stage and pipeline tests: a tiny random-init model package, a stack (job table,
store, published model) and a real micrograph crop shipped with the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pyvips

from storage.db import upgrade
from storage.settings import Settings
from worker.context import WorkerContext
from worker.packages import write_package
from worker.registry import publish_package
from worker.stitching import write_label_pyramid, write_strip

DEMO_DATA = Path(__file__).resolve().parents[2] / "cli" / "demo_data"
CLASSES = [
    {"index": 0, "name": "background", "rgb": (40, 40, 40), "label_value": 0, "pellet": False},
    {"index": 1, "name": "oxide", "rgb": (255, 170, 0), "label_value": 1},
    {"index": 2, "name": "crack", "rgb": (0, 85, 255), "label_value": 2},
]


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory) -> Path:
    """A random-init UNet (ResNet-18 encoder, depth 3) package: fast on CPU, real smp code."""
    import segmentation_models_pytorch as smp
    import torch

    torch.manual_seed(0)
    params = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             in_channels=3, classes=3, **params)
    folder = tmp_path_factory.mktemp("pkg") / "tiny" / "1"
    write_package(folder, model, dict(
        name="tiny", version="1", architecture="Unet", encoder="resnet18", arch_params=params,
        classes=CLASSES, tile_size=128, halo=16,
    ))
    return folder


@pytest.fixture(scope="session")
def micrograph(tmp_path_factory) -> Path:
    """A 700 x 500 px crop of a real SEM micrograph (NASA EBC, shipped in cli/demo_data)."""
    src = sorted(DEMO_DATA.glob("*.png"))[0]
    out = tmp_path_factory.mktemp("img") / "crop.png"
    pyvips.Image.new_from_file(str(src)).crop(100, 200, 700, 500).pngsave(str(out))
    return out


def make_settings(home: Path, **overrides) -> Settings:
    """Settings of a test stack under ``home`` with a small tile geometry."""
    values = dict(home=home, default_model="tiny", tile_size=128, halo=16, batch_size=8,
                  torch_threads=1, lease_seconds=120)
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def stack(tmp_path, tiny_package):
    """Settings + worker context over SQLite and a local store, tiny model published; the
    context's ``enqueue`` appends to ``ctx.sent`` instead of using a broker."""
    settings = make_settings(tmp_path / "home")
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    ctx.sent = sent
    publish_package(ctx, tiny_package)
    return ctx


def read_tiff(path: Path, page: int = 0) -> np.ndarray:
    """Pixels of one page of a TIFF as (H, W) or (H, W, C)."""
    img = pyvips.Image.new_from_file(str(path), page=page)
    arr = np.ndarray(buffer=img.write_to_memory(), dtype=np.uint8,
                     shape=(img.height, img.width, img.bands))
    return arr[..., 0] if img.bands == 1 else arr


def unique_prefix() -> str:
    """A queue prefix no other test run uses (``PELLETSEG_QUEUE_PREFIX``)."""
    import uuid

    return f"t{uuid.uuid4().hex[:10]}-"


def sqs_settings(home: Path, endpoint: str, **overrides) -> Settings:
    """Settings for SQS on the moto server: a fresh queue prefix, each queue created with its
    dead-letter queue and redrive policy (:func:`storage.brokers.create_sqs_queues`), and
    predefined for kombu; 1 s long polls, so a redelivered message is back after 1 s."""
    from storage.brokers import create_sqs_queues

    host = endpoint.removeprefix("http://")
    values = dict(queue_prefix=unique_prefix(), broker_url=f"sqs://testing:testing@{host}")
    values.update(overrides)
    settings = make_settings(home, **values)
    predefined = create_sqs_queues(settings)
    options = {"region": "us-east-1", "is_secure": False, "wait_time_seconds": 1,
               "predefined_queues": predefined}
    return make_settings(home, broker_transport_options=options, **values)


@pytest.fixture
def broker_cleanup():
    """Call with a :class:`Settings`; its prefixed queues and broker keys are deleted after
    the test (``storage.brokers.delete_queues``)."""
    from storage.brokers import delete_queues

    registered: list[Settings] = []
    yield registered.append
    for settings in registered:
        delete_queues(settings)


def reference_run(tmp_path: Path, tiny_package: Path, image: Path, **overrides):
    """Labels (H, W) uint8 and the fractions document of an uninterrupted run of ``image``
    (stage functions called in this process, no broker)."""
    import json

    from api.jobs import build_spec
    from storage.layout import FRACTIONS_JSON, LABELS, output_key
    from storage.queues import PLAN_TASK, REDUCE_TASK, ROW_TASK
    from storage.states import JobStatus
    from worker.planning import plan_job
    from worker.reducing import reduce_job
    from worker.segmenting import segment_row

    settings = make_settings(tmp_path / "reference", **overrides)
    settings.ensure_home()
    upgrade(settings.resolved_database_url)
    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    publish_package(ctx, tiny_package)
    job = ctx.jobs.create_job(build_spec(settings, str(image)))
    sent.append((PLAN_TASK, job.id))
    stages = {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}
    while sent:
        task, *args = sent.pop(0)
        stages[task](ctx, *args)
    assert ctx.jobs.get_job(job.id).status == JobStatus.SUCCEEDED
    labels = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))
    return labels, json.loads(ctx.blobs.get_bytes(output_key(job.id, FRACTIONS_JSON)))


# ---------------------------------------------------------------- stitched label maps
#: palette of the stitching and rendering tests (class 2 never occurs in their label maps)
PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
W = 600  # width of the stitched label strips (px)


def label_strips(rng) -> list[np.ndarray]:
    """Three strips (the last one shorter) of 5x5-px blocks of classes 0, 1 and 3 only.

    5 px blocks straddle the 2x2 windows of the pyramid, so a mean shrink would create 2s.
    """
    out = []
    for h in (224, 224, 152):
        blocks = rng.choice(np.array([0, 1, 3], np.uint8), size=(h // 5 + 1, W // 5 + 1))
        out.append(np.kron(blocks, np.ones((5, 5), np.uint8))[:h, :W].copy())
    return out


@pytest.fixture
def stitched(tmp_path):
    rng = np.random.default_rng(1)
    strips = label_strips(rng)
    paths = []
    for i, s in enumerate(strips):
        p = tmp_path / f"{i:05d}.tif"
        write_strip(s, p)
        paths.append(p)
    out = tmp_path / "labels.tif"
    write_label_pyramid(paths, out)
    return out, np.concatenate(strips)


@pytest.fixture
def source(tmp_path):
    """A smooth 16-bit grey source image of the stitched size (W x 600)."""
    y, x = np.mgrid[0:600, 0:W]
    grey = ((x + y) * 65535 // (W + 600)).astype(np.uint16)
    path = tmp_path / "source.tif"
    pyvips.Image.new_from_array(grey).tiffsave(str(path))
    return path, grey
