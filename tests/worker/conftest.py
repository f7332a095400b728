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


def sqs_settings(home: Path, endpoint: str, **overrides) -> Settings:
    """Settings for SQS on the moto server: one queue per pelletseg queue, predefined."""
    import uuid

    import boto3

    from storage.queues import QUEUES

    client = boto3.client("sqs")
    prefix = f"t{uuid.uuid4().hex[:8]}-"
    predefined = {
        q: {"url": client.create_queue(QueueName=prefix + q)["QueueUrl"]} for q in QUEUES
    }
    host = endpoint.removeprefix("http://")
    return make_settings(
        home,
        broker_url=f"sqs://testing:testing@{host}",
        broker_transport_options={"region": "us-east-1", "is_secure": False,
                                  "predefined_queues": predefined},
        **overrides,
    )
