"""Tile geometry has one owner and one path: a job that names none gets its model package's,
the operator may override it, and a package is served at the geometry it is evaluated at (the
labels of a job equal the labels evaluation predicts)."""

from __future__ import annotations

import numpy as np
import pytest

from core.geometry import TileGeometry
from core.settings import Settings
from queues import PLAN_TASK, REDUCE_TASK, ROW_TASK
from storage.blobs import LABELS, output_key
from submission import SubmissionError, SubmissionService, prepare
from tests.conftest import CLASSES
from tests.worker.conftest import read_tiff

PACKAGE_GEOMETRY = TileGeometry(96, 16)  # stride 64: neither the settings' nor the default


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny random-init package recorded at :data:`PACKAGE_GEOMETRY`."""
    import segmentation_models_pytorch as smp
    import torch

    from worker.engine.network import write_package

    torch.manual_seed(1)
    params = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}
    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             in_channels=3, classes=3, **params)
    folder = tmp_path_factory.mktemp("geo") / "geo" / "1"
    write_package(folder, model, dict(name="geo", version="1", architecture="Unet",
                                      encoder="resnet18", arch_params=params, classes=CLASSES,
                                      **PACKAGE_GEOMETRY.as_dict()))
    return folder


@pytest.fixture
def settings(tmp_path, package) -> Settings:
    settings = Settings(home=tmp_path / "home", default_model="geo", batch_size=4,
                        torch_threads=1)
    prepare(settings).publish(package)
    return settings


def test_a_job_that_names_no_geometry_gets_its_packages(settings, micrograph):
    service = SubmissionService(settings)
    spec = service.build_spec(str(micrograph))
    assert spec.geometry == PACKAGE_GEOMETRY and spec.model_version == "1"
    assert service.build_spec(str(micrograph), halo=8).geometry == TileGeometry(96, 8)
    assert service.build_spec(str(micrograph), tile_size=256, halo=64).geometry == \
        TileGeometry(256, 64)
    operator = settings.model_copy(update={"tile_size": 128, "halo": 32})
    assert SubmissionService(operator).build_spec(str(micrograph)).geometry == \
        TileGeometry(128, 32)
    with pytest.raises(SubmissionError, match="tile_size - 2\\*halo"):
        service.build_spec(str(micrograph), halo=40)


def test_serving_and_evaluation_of_a_package_use_the_same_geometry(settings, package,
                                                                    micrograph):
    from imaging import open_image, read_rows
    from training.evaluation import evaluate_package
    from worker.context import WorkerContext
    from worker.stages.planning import plan_job
    from worker.stages.reducing import reduce_job
    from worker.stages.segmenting import segment_row

    sent: list[tuple] = []
    ctx = WorkerContext.from_settings(settings, lambda task, *args: sent.append((task, *args)))
    service = SubmissionService(settings, table=ctx.table)
    job = ctx.table.jobs.create(service.build_spec(str(micrograph)))
    sent.append((PLAN_TASK, job.id))
    stages = {PLAN_TASK: plan_job, ROW_TASK: segment_row, REDUCE_TASK: reduce_job}
    while sent:
        task, *args = sent.pop(0)
        stages[task](ctx, *args)
    rows = ctx.table.rows.list(job.id)
    assert [r.y0 for r in rows] == list(range(0, 500, PACKAGE_GEOMETRY.stride))
    served = read_tiff(ctx.local_blob(output_key(job.id, LABELS)))

    image = read_rows(open_image(micrograph, max_pixels=10**9), 0, 500)
    evaluated = evaluate_package(package, [(image, served)], threads=1)
    assert (evaluated["inference"]["tile_size"], evaluated["inference"]["halo"]) == (96, 16)
    assert evaluated["pixel_accuracy"] == 1.0  # evaluation predicts exactly what was served
    other = evaluate_package(package, [(image, served)], threads=1,
                             geometry=TileGeometry(64, 16))
    assert other["pixel_accuracy"] < 1.0  # another geometry gives other labels
    assert np.unique(served).size > 1


def test_a_tile_the_model_cannot_take_at_its_input_scale_is_refused_at_submission(
        tmp_path, package, micrograph):
    import json
    import shutil

    from models import MODEL_JSON

    half = tmp_path / "half" / "1"
    shutil.copytree(package, half)
    meta = json.loads((half / MODEL_JSON).read_text())
    # the model sees 64 px tiles with an 8 px halo: 128 / 16 image px at input scale 0.5
    (half / MODEL_JSON).write_text(json.dumps({**meta, "name": "half", "input_scale": 0.5,
                                               "tile_size": 128, "halo": 16}))
    settings = Settings(home=tmp_path / "home", default_model="half", torch_threads=1)
    prepare(settings).publish(half)
    service = SubmissionService(settings)
    assert service.build_spec(str(micrograph)).geometry == TileGeometry(128, 16)
    assert service.build_spec(str(micrograph), tile_size=192, halo=32).geometry == \
        TileGeometry(192, 32)  # 96 model px
    with pytest.raises(SubmissionError, match=r"a 96 px tile at input scale 0\.5 is 48 "
                                              r"model px, not a multiple of 32"):
        service.build_spec(str(micrograph), tile_size=96, halo=16)
