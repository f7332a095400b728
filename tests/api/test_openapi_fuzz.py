"""Schemathesis over the OpenAPI document: requests generated from it (valid ones and invalid
ones) to every operation, in-process against the ASGI app with a valid key: no answer may be
a 5xx.

Bounded: a few examples per operation and mode, no example database, no deadline.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.api.conftest import running_job

EXAMPLES = 6


def test_no_server_errors_on_any_operation(api):
    # Something to find: a job with rows, a cancelled job, an upload with a part.
    running_job(api.table, rows=2)
    job = api.client.post("/v1/jobs", json={"source_url": "s3://b/x.tif"}).json()
    api.client.post(f"/v1/jobs/{job['id']}/cancel")
    up = api.client.post("/v1/uploads", json={"filename": "a.tif", "size": 3}).json()
    api.client.put(up["urls"]["1"], content=b"abc")
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    headers = {"Authorization": f"Bearer {api.key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            try:
                check()
            except Unsatisfiable:
                # No invalid request exists (an operation without parameters or body).
                assert mode == GenerationMode.NEGATIVE, operation.label
