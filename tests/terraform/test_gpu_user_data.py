"""The GPU workers' boot script as Terraform renders it: `terraform plan` of
terraform/modules/gpu_workers alone (a scratch copy, fake credentials, no AWS call: the module
reads no data source), then the planned launch template's user data decoded, checked by
`bash -n`, and read like the instance would: the env file's PELLETSEG_* settings parse as
Settings, and the `celery worker` of each GPU runs a threads pool of exactly
PELLETSEG_ROWS_IN_FLIGHT rows. Also: rows_in_flight outside 1..8 (or not whole) is refused."""

from __future__ import annotations

import base64
import subprocess

import pytest

from tests.deploy.conftest import assert_pool_fits_rows_in_flight, celery_pool, settings_from_env
from tests.terraform.conftest import (
    offline_module,
    planned_resources,
    user_data_env_file,
    user_data_worker_argv,
)

#: The module's required variables, realistic; the caller's environment tries to set
#: PELLETSEG_ROWS_IN_FLIGHT itself (the module's rows_in_flight must win).
VARIABLES = {
    "name": "pelletseg-t", "name_asg": "pelletseg-t-gpu-workers", "region": "eu-west-1",
    "vpc_id": "vpc-0123456789abcdef0", "vpc_cidr_block": "10.40.0.0/16",
    "subnet_ids": ["subnet-0123456789abcdef0"], "ami_id": "ami-0123456789abcdef0",
    "backlog_per_instance": 20, "rows_queue_name": "pelletseg-t-rows",
    "instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/pelletseg-t-gpu-worker",
    "image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pelletseg-t/worker:0.1.0",
    "environment": {"PELLETSEG_DEVICE": "cuda", "PELLETSEG_SPOT_MODE": "release",
                    "PELLETSEG_QUEUE_PREFIX": "pelletseg-t-", "PELLETSEG_ROWS_IN_FLIGHT": "7"},
    "secrets": {"PELLETSEG_DATABASE_URL": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db"},
    "queues": ["pelletseg-t-rows"], "log_group_name": "/pelletseg-t/gpu-worker",
}


@pytest.fixture(scope="module")
def module_dir(terraform, tmp_path_factory):
    return offline_module(terraform, tmp_path_factory.mktemp("gpu-workers"), "gpu_workers",
                          VARIABLES)


def planned_user_data(terraform, work, *extra: str) -> str:
    """The launch template's user data (decoded) that `terraform plan` would create."""
    after = planned_resources(terraform, work, *extra)["aws_launch_template.this"]
    return base64.b64decode(after["user_data"]).decode()


@pytest.mark.parametrize("rows_in_flight", [None, 3], ids=["default", "3"])
def test_gpu_worker_runs_rows_in_flight_on_a_threads_pool(terraform, module_dir, rows_in_flight):
    extra = () if rows_in_flight is None else (f"-var=rows_in_flight={rows_in_flight}",)
    script = planned_user_data(terraform, module_dir, *extra)
    proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    n = rows_in_flight or 2
    env = user_data_env_file(script)
    assert env["PELLETSEG_ROWS_IN_FLIGHT"] == str(n)  # not the caller's 7
    settings = settings_from_env(env)
    assert settings.rows_in_flight == n and settings.device == "cuda"
    argv = user_data_worker_argv(script)
    assert argv[:6] == ["celery", "-A", "worker.tasks", "worker", "-Q", "pelletseg-t-rows"]
    assert celery_pool(argv) == ("threads", str(n))
    assert_pool_fits_rows_in_flight(argv, settings, "GPU worker user data")


@pytest.mark.parametrize("value", ["0", "9", "2.5"])
def test_rows_in_flight_outside_one_to_eight_is_refused(terraform, module_dir, value):
    proc = terraform("plan", "-input=false", "-no-color", "-lock=false",
                     f"-var=rows_in_flight={value}", cwd=module_dir, check=False, timeout=180)
    assert proc.returncode != 0
    assert "rows_in_flight must be a whole number from 1 to 8" in proc.stderr, proc.stderr[-2000:]
