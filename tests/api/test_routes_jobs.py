"""/v1/jobs: submission checks, idempotency, listing, cancel and every resume branch (with
exactly the tasks each one enqueues), and /v1/models."""

from __future__ import annotations

import pytest

from core.states import JobStatus, RowStatus
from tests.api.conftest import MODEL, drain_tasks, make_api, make_settings, new_job, running_job

PLAN, ROW, REDUCE = "pelletseg.plan_job", "pelletseg.segment_row", "pelletseg.reduce_job"


def test_create_job_returns_202_and_enqueues_one_plan(api):
    r = api.client.post("/v1/jobs", json={
        "source_url": "s3://pellets/P-1.tif", "labels": {"sample": "P-1"}, "tile_size": 512,
        "halo": 64})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"].endswith(f"/v1/jobs/{job['id']}")
    assert job["status"] == "queued" and job["source_url"] == "s3://pellets/P-1.tif"
    assert (job["tile_size"], job["halo"], job["labels"]) == (512, 64, {"sample": "P-1"})
    # the version checked at submission is stored; the weights sha256 once it is planned
    assert job["model"] == {"name": MODEL, "version": "1", "sha256": None}
    assert job["rows_total"] is None and job["rows_done"] == 0
    assert drain_tasks(api.settings) == [(PLAN, job["id"])]


def test_idempotency_key_returns_the_same_job_and_enqueues_once(api):
    body = {"source_url": "s3://pellets/P-2.tif", "idempotency_key": "lims-2"}
    first = api.client.post("/v1/jobs", json=body).json()
    again = api.client.post("/v1/jobs", json=body)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert drain_tasks(api.settings) == [(PLAN, first["id"])]
    assert len(api.table.jobs.list()) == 1


@pytest.mark.parametrize("body, message", [
    ({"source_url": "http://169.254.169.254/latest"}, "scheme 'http' is not allowed"),
    ({"source_url": "s3://b/x.tif", "tile_size": 500}, "multiple of 32"),
    ({"source_url": "s3://b/x.tif", "model": "nope"}, "model 'nope' is not registered"),
    ({"source_url": "s3://b/x.tif", "colour": "red"}, "colour: Extra inputs are not permitted"),
    ({"source_url": "s3://b/x.tif", "halo": -1}, "halo: Input should be greater than"),
    ({}, "give exactly one of source_url and upload_id"),
])
def test_invalid_submissions_are_422_with_a_message(api, body, message):
    r = api.client.post("/v1/jobs", json=body)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str) and message in r.json()["detail"]
    assert drain_tasks(api.settings) == [] and api.table.jobs.list() == []


def test_local_sources_need_the_file_scheme(tmp_path):
    img = tmp_path / "p.png"
    img.write_bytes(b"x")
    api = make_api(make_settings(tmp_path, default_model=MODEL, allowed_source_schemes=["s3"]))
    r = api.client.post("/v1/jobs", json={"source_url": str(img)})
    assert r.status_code == 422 and "local file paths are not allowed" in r.json()["detail"]
    r = api.client.post("/v1/jobs", json={"source_url": img.as_uri()})
    assert r.status_code == 422 and "scheme 'file' is not allowed" in r.json()["detail"]


def test_local_sources_are_accepted_where_file_is_allowed(tmp_path):
    from tests.api.conftest import MODEL, make_api, make_settings

    img = tmp_path / "lab" / "p.png"
    img.parent.mkdir()
    img.write_bytes(b"x")
    api = make_api(make_settings(tmp_path, default_model=MODEL, source_roots=[str(img.parent)]))
    r = api.client.post("/v1/jobs", json={"source_url": str(img)})
    assert r.status_code == 202 and r.json()["source_url"] == img.resolve().as_uri()


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:9000/hook", "resolves to 127.0.0.1"),
    ("http://localhost/hook", "loopback, private"),
    ("https://10.1.2.3/hook", "resolves to 10.1.2.3"),
    ("http://169.254.169.254/latest/meta-data", "resolves to 169.254.169.254"),
    ("http://[::1]/hook", "resolves to ::1"),
    ("http://[::ffff:192.168.0.1]/hook", "resolves to 192.168.0.1"),
    ("ftp://93.184.216.34/hook", "must be an http:// or https:// URL"),
    ("http://user:pw@93.184.216.34/hook", "must not carry credentials"),
    ("https:///hook", "has no host"),
])
def test_webhooks_to_private_addresses_are_refused(api, url, message):
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif", "webhook_url": url})
    assert r.status_code == 422 and message in r.json()["detail"]
    assert api.table.jobs.list() == []


def test_public_webhooks_are_stored_on_the_spec(api):
    url = "https://93.184.216.34/hooks/pelletseg"
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif", "webhook_url": url})
    assert r.status_code == 202 and r.json()["webhook_url"] == url
    assert api.table.jobs.get(r.json()["id"]).spec["webhook_url"] == url


def test_private_webhooks_allowed_by_setting(tmp_path):
    api = make_api(make_settings(tmp_path, default_model=MODEL, allow_private_webhooks=True))
    url = "http://127.0.0.1:9000/hook"
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif", "webhook_url": url})
    assert r.status_code == 202 and r.json()["webhook_url"] == url


def test_list_filters_by_status_and_labels_and_paginates(api):
    a = new_job(api.table, {"lab": "north", "batch": 7})
    b = new_job(api.table, {"lab": "south"})
    c = new_job(api.table, {"lab": "north"})
    api.table.jobs.transition(b.id, JobStatus.CANCELLED)

    def ids(**params):
        r = api.client.get("/v1/jobs", params=params)
        assert r.status_code == 200, r.text
        return [j["id"] for j in r.json()["jobs"]], r.json()["next_offset"]

    assert ids() == ([c.id, b.id, a.id], None)  # newest first
    assert ids(status="cancelled") == ([b.id], None)
    assert ids(status="queued", label="lab:north") == ([c.id, a.id], None)
    assert ids(label=["lab:north", "batch:7"]) == ([a.id], None)
    assert ids(label="lab:east") == ([], None)
    assert ids(limit=2) == ([c.id, b.id], 2)
    assert ids(limit=2, offset=2) == ([a.id], None)
    assert ids(label="lab:north", limit=1, offset=1) == ([a.id], None)
    bad = api.client.get("/v1/jobs", params={"label": "north"})
    assert bad.status_code == 422 and "must look like key:value" in bad.json()["detail"]
    assert api.client.get("/v1/jobs", params={"status": "lost"}).status_code == 422
    assert api.client.get("/v1/jobs", params={"limit": 0}).status_code == 422
    # Found by schemathesis: an offset past SQLite's INTEGER range was a 500.
    assert api.client.get("/v1/jobs", params={"offset": 2**63}).status_code == 422


def test_get_job_reports_progress_and_404(api):
    job = running_job(api.table, rows=4, done=(0, 1), width=1000)
    body = api.client.get(f"/v1/jobs/{job.id}").json()
    assert (body["rows_total"], body["rows_done"], body["rows_pending"]) == (4, 2, 2)
    assert (body["width"], body["height"], body["status"]) == (1000, 40, "running")
    assert body["throughput_mpx_s"] is not None and body["throughput_mpx_s"] > 0
    r = api.client.get("/v1/jobs/no-such-job")
    assert r.status_code == 404 and r.json()["detail"] == "job no-such-job does not exist"


def test_cancel_then_conflict_when_terminal(api):
    job = running_job(api.table, rows=2)
    r = api.client.post(f"/v1/jobs/{job.id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert r.json()["finished_at"] is not None
    again = api.client.post(f"/v1/jobs/{job.id}/cancel")
    assert again.status_code == 409 and "is cancelled" in again.json()["detail"]
    assert api.client.post("/v1/jobs/nope/cancel").status_code == 404


def test_resume_unplanned_job_requeues_plan_only(api):
    job = new_job(api.table)
    api.table.jobs.transition(job.id, JobStatus.PLANNING)
    api.table.jobs.transition(job.id, JobStatus.FAILED, error="source unreachable")
    r = api.client.post(f"/v1/jobs/{job.id}/resume")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "queued" and r.json()["error"] is None
    assert drain_tasks(api.settings) == [(PLAN, job.id)]


def test_resume_reenqueues_only_rows_not_done(api):
    job = running_job(api.table, rows=4, done=(0, 2))
    assert api.table.rows.claim(job.id, 1, "w", lease_seconds=60).claimed
    assert api.table.rows.fail(job.id, 1, "boom", max_attempts=1) == RowStatus.FAILED
    assert api.table.jobs.get(job.id).status == JobStatus.FAILED  # the row failed its job
    r = api.client.post(f"/v1/jobs/{job.id}/resume")
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert r.json()["rows_pending"] == 2 and r.json()["rows_done"] == 2
    assert drain_tasks(api.settings) == [(ROW, job.id, 1), (ROW, job.id, 3)]
    row = api.table.rows.get(job.id, 1)
    assert (row.status, row.attempts) == (RowStatus.PENDING, 0)


def test_resume_with_every_row_done_enqueues_only_the_reducer(api):
    job = running_job(api.table, rows=2, done=(0, 1))
    assert api.table.jobs.get(job.id).status == JobStatus.REDUCING
    assert api.client.post(f"/v1/jobs/{job.id}/cancel").json()["status"] == "cancelled"
    r = api.client.post(f"/v1/jobs/{job.id}/resume")
    assert r.status_code == 202 and r.json()["status"] == "reducing"
    assert drain_tasks(api.settings) == [(REDUCE, job.id)]


def test_resume_refuses_jobs_that_are_not_failed_or_cancelled(api):
    job = running_job(api.table, rows=2)
    r = api.client.post(f"/v1/jobs/{job.id}/resume")
    assert r.status_code == 409
    assert "only failed, cancelled or interrupted jobs can be resumed" in r.json()["detail"]
    assert drain_tasks(api.settings) == []
    assert api.client.post("/v1/jobs/nope/resume").status_code == 404


def test_the_job_list_says_how_many_workers_are_live(api):
    """``workers_live``: the dashboard says that queued jobs wait while no worker runs."""
    new_job(api.table, {})
    assert api.client.get("/v1/jobs").json()["workers_live"] == 0
    api.table.heartbeats.register("host-a:11", interval=60)
    api.table.heartbeats.register("host-b:12", interval=60)
    assert api.client.get("/v1/jobs").json()["workers_live"] == 2
    api.table.heartbeats.stop("host-b:12")
    assert api.client.get("/v1/jobs").json()["workers_live"] == 1


def test_models_lists_registered_packages(api):
    api.table.models.register(name="a-model", version="2", sha256="b" * 64, architecture="FPN",
                            encoder="resnet18", classes=[], metrics={"test_miou": 0.5})
    r = api.client.get("/v1/models")
    assert r.status_code == 200
    got = [(m["name"], m["version"], m["sha256"][:1]) for m in r.json()]
    assert got == [("a-model", "2", "b"), (MODEL, "1", "a")]
    assert r.json()[0]["metrics"] == {"test_miou": 0.5}


def test_body_over_the_limit_is_413(tmp_path):
    api = make_api(make_settings(tmp_path, default_model=MODEL, max_body_bytes=1024))
    big = {"source_url": "s3://b/x.tif", "labels": {"note": "x" * 2000}}
    r = api.client.post("/v1/jobs", json=big)
    assert r.status_code == 413 and "larger than 1024 bytes" in r.json()["detail"]
    chunks = (b'{"source_url": "s3://b/x.tif", "labels": {"note": "' + b"x" * 600, b"x" * 600 + b'"}}')
    r = api.client.post("/v1/jobs", content=iter(chunks),
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert api.table.jobs.list() == []
    small = api.client.post("/v1/jobs", content=iter([b'{"source_url": ', b'"s3://b/y.tif"}']),
                            headers={"Content-Type": "application/json"})
    assert small.status_code == 202, small.text  # a chunked body under the limit is replayed


def test_broker_down_fails_the_job_with_503_and_resume_recovers(tmp_path):
    settings = make_settings(tmp_path, default_model=MODEL, broker_url="redis://127.0.0.1:1/0")
    down = make_api(settings)
    r = down.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif"})
    assert r.status_code == 503 and "the broker is unreachable" in r.json()["detail"]
    (job,) = down.table.jobs.list()
    assert job.status == JobStatus.FAILED and "could not enqueue" in job.error
    up = make_api(make_settings(tmp_path, default_model=MODEL))  # same job table, broker up
    resumed = up.client.post(f"/v1/jobs/{job.id}/resume")
    assert resumed.status_code == 202 and resumed.json()["status"] == "queued"
    assert drain_tasks(up.settings) == [(PLAN, job.id)]


def test_message_the_broker_refuses_fails_the_job_with_503_and_the_reason(tmp_path, monkeypatch):
    """RabbitMQ's publisher confirm answered nack (a full queue, a message over its
    ``max_message_size``: tests/queues/test_app.py shows the nack on a real broker): the job is
    failed with the broker's reason, to be resumed, and never left ``queued`` for nothing."""
    from amqp.exceptions import MessageNacked

    import submission.service

    def refuse(*args):
        raise MessageNacked("Message was nacked by broker")

    monkeypatch.setattr(submission.service, "send", refuse)
    api = make_api(make_settings(tmp_path, default_model=MODEL))
    r = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif"})
    assert r.status_code == 503
    assert "the broker refused the message (Message was nacked" in r.json()["detail"]
    (job,) = api.table.jobs.list()
    assert job.status == JobStatus.FAILED
    assert job.error == ("could not enqueue work: the broker refused the message: "
                         "Message was nacked by broker")


def test_resume_of_a_job_cancelled_mid_planning_plans_again(api):
    job = new_job(api.table)
    api.table.jobs.transition(job.id, JobStatus.PLANNING)
    api.table.rows.insert(job.id, [(0, 10), (10, 20)])  # planning stopped before "running"
    api.client.post(f"/v1/jobs/{job.id}/cancel")
    r = api.client.post(f"/v1/jobs/{job.id}/resume")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    assert drain_tasks(api.settings) == [(PLAN, job.id)]
