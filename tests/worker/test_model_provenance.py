"""A job records the exact model version and weights sha256 it was planned with, and the HTTP
API shows them: with two versions of one model registered, a pinned version and the default
(newest) version each end up on their job."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from models.package import read_package
from storage.jobtable.api_keys import ApiKeys
from storage.jobtable.engine import cached_engine
from submission import SubmissionService
from worker.engine.network import write_package
from worker.stages.planning import plan_job


@pytest.fixture
def two_versions(stack, tiny_package, tmp_path):
    """The tiny model as version 1 (published by ``stack``) and a retrained version 2."""
    import segmentation_models_pytorch as smp
    import torch

    v1 = read_package(tiny_package)
    torch.manual_seed(1)
    model = smp.create_model("Unet", encoder_name="resnet18", encoder_weights=None,
                             in_channels=3, classes=3, **v1.arch_params)
    meta = json.loads((tiny_package / "model.json").read_text())
    meta.pop("weights_sha256")
    v2 = write_package(tmp_path / "v2", model, {**meta, "version": "2"})
    stack.models.publish(tmp_path / "v2")
    assert v1.weights_sha256 != v2.weights_sha256
    return v1, v2


def test_jobs_record_and_show_the_exact_model_version_and_sha256(stack, two_versions, micrograph):
    v1, v2 = two_versions
    pinned = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph), model="tiny",
                                              model_version="1"))
    newest = stack.table.jobs.create(SubmissionService(stack.settings).build_spec(str(micrograph), model="tiny"))
    for job in (pinned, newest):
        plan_job(stack, job.id)
    got = {j: stack.table.jobs.get(j.id) for j in (pinned, newest)}
    assert (got[pinned].model_version, got[pinned].model_sha256) == ("1", v1.weights_sha256)
    assert (got[newest].model_version, got[newest].model_sha256) == ("2", v2.weights_sha256)

    _, key = ApiKeys(cached_engine(stack.settings.resolved_database_url)).create("t")
    client = TestClient(create_app(stack.settings), headers={"Authorization": f"Bearer {key}"})
    for job, pkg in ((pinned, v1), (newest, v2)):
        body = client.get(f"/v1/jobs/{job.id}").json()
        assert body["model"] == {"name": "tiny", "version": pkg.version,
                                 "sha256": pkg.weights_sha256}
