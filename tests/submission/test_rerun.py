"""Rerunning jobs (``SubmissionService.rerun`` / ``rerun_batch``): a new job on the earlier
job's source with its options, the model given or the same at its newest version, labelled
``rerun_of``; a batch as one new batch, all checked before any job is created."""

from __future__ import annotations

import pytest

from core.states import JobStatus
from storage.errors import NotFoundError
from submission import SubmissionError


def test_a_rerun_keeps_the_source_and_options_and_names_the_earlier_job(service, image, make_job):
    old = make_job(JobStatus.SUCCEEDED, labels={"sample": "P-7"},
               pixel_size_um=0.4, precision="fp32", webhook_url="http://127.0.0.1:9/hook",
               significant_bits=12)
    service.delete(old.id)  # its outputs gone: the source is what a rerun needs
    new = service.rerun(old.id)
    assert new.id != old.id and new.status == JobStatus.QUEUED and new.batch_id is None
    spec, before = new.spec, old.spec
    assert spec["source_url"] == before["source_url"]
    assert spec["labels"] == {"sample": "P-7", "rerun_of": old.id}
    assert (spec["pixel_size_um"], spec["precision"], spec["webhook_url"],
            spec["significant_bits"]) == (0.4, "fp32", "http://127.0.0.1:9/hook", 12)
    newest = service.models.resolve(before["model"], None)
    assert (spec["model"], spec["model_version"]) == (before["model"], newest.version)
    assert (spec["tile_size"], spec["halo"]) == (before["tile_size"], before["halo"])
    assert service.table.jobs.get(old.id).status == JobStatus.DELETED  # left as it was


def test_a_rerun_is_refused_with_the_reason_when_the_source_or_model_is_gone(
        service, image, make_job):
    old = make_job(JobStatus.FAILED)
    with pytest.raises(SubmissionError, match="no-such-model"):
        service.rerun(old.id, model="no-such-model")
    image.unlink()
    with pytest.raises(SubmissionError, match="no such file"):
        service.rerun(old.id)
    with pytest.raises(NotFoundError):
        service.rerun("no-such-job")
    assert len(service.table.jobs.list(with_deleted=True)) == 1  # nothing was created


def test_a_batch_reruns_as_one_new_batch_or_not_at_all(service, image, tmp_path, make_job):
    other = tmp_path / "other.png"
    other.write_bytes(b"another image")
    jobs = [make_job(JobStatus.SUCCEEDED, batch_id="b-1"),
            make_job(JobStatus.FAILED, batch_id="b-1", source=other)]
    new = service.rerun_batch("b-1")
    assert len({j.batch_id for j in new}) == 1 and new[0].batch_id != "b-1"
    assert [j.spec["labels"]["rerun_of"] for j in new] == [j.id for j in jobs]
    assert [j.source_url for j in new] == [j.source_url for j in jobs]
    other.unlink()
    with pytest.raises(SubmissionError, match="no such file"):
        service.rerun_batch("b-1")
    assert len(service.table.jobs.list()) == 4  # the second rerun created nothing
    other.write_bytes(b"another image")
    corrected = service.rerun_batch("b-1", pixel_size_um=0.5, significant_bits=12)
    assert [(j.spec["pixel_size_um"], j.spec["significant_bits"]) for j in corrected] == [
        (0.5, 12), (0.5, 12)]
    assert [j.spec["labels"]["rerun_of"] for j in corrected] == [j.id for j in jobs]
