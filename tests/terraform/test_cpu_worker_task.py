"""The CPU workers' task definition and scaling as Terraform plans them: `terraform plan` of
terraform/modules/cpu_workers alone (a scratch copy, fake credentials, no AWS call: the module
reads no data source), then the planned container definitions and scaling policy read back.
stream_reduce off (the default): the solo `celery worker` of before, no
PELLETSEG_STREAM_REDUCE, backlog of visible messages only. On: the setting from the variable,
a threads pool of reduce_concurrency slots, and the reduce queue's in-flight messages in the
scaling metric. Also: reduce_concurrency outside 2..32 (or not whole) is refused."""

from __future__ import annotations

import json

import pytest

from tests.deploy.conftest import assert_pool_fits_stream_reduce, celery_pool, settings_from_env
from tests.terraform.conftest import offline_module, planned_resources

#: The module's required variables, realistic; the caller's environment tries to switch the
#: streaming stitcher on itself (the module's stream_reduce must decide).
ROLES = {c: f"arn:aws:iam::123456789012:role/pelletseg-t-{c}"
         for c in ("cpu-worker", "scheduler", "migrate")}
VARIABLES = {
    "name": "pelletseg-t", "region": "eu-west-1", "vpc_id": "vpc-0123456789abcdef0",
    "vpc_cidr_block": "10.40.0.0/16", "private_subnet_ids": ["subnet-0123456789abcdef0"],
    "cluster_arn": "arn:aws:ecs:eu-west-1:123456789012:cluster/pelletseg-t",
    "cluster_name": "pelletseg-t",
    "worker_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pelletseg-t/worker-cpu:0.1.0",
    "api_image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/pelletseg-t/api:0.1.0",
    "queues": ["pelletseg-t-plan", "pelletseg-t-reduce"],
    "queue_names": {q: f"pelletseg-t-{q}" for q in ("plan", "rows", "reduce")},
    "task_role_arns": ROLES, "execution_role_arns": ROLES,
    "environment": {"PELLETSEG_DEVICE": "cpu", "PELLETSEG_QUEUE_PREFIX": "pelletseg-t-",
                    "PELLETSEG_STREAM_REDUCE": "true"},
    "secrets": {"PELLETSEG_DATABASE_URL": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db"},
    "log_group_names": {c: f"/pelletseg-t/{c}" for c in ("cpu-worker", "scheduler", "migrate")},
}

#: The worker's command before the streaming stitcher: what it must still be when off.
SOLO = ["celery", "-A", "worker.tasks", "worker", "-Q", "pelletseg-t-plan,pelletseg-t-reduce",
        "--pool", "solo", "--concurrency", "1", "--prefetch-multiplier", "1", "-n", "cpu@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]


@pytest.fixture(scope="module")
def module_dir(terraform, tmp_path_factory):
    return offline_module(terraform, tmp_path_factory.mktemp("cpu-workers"), "cpu_workers",
                          VARIABLES)


def container(after: dict) -> dict:
    (c,) = json.loads(after["container_definitions"])
    return c


@pytest.mark.parametrize(("variables", "concurrency", "expression"), [
    ({}, None, "(plan + reduce) / tasks"),
    ({"stream_reduce": "true"}, 4, "(plan + reduce + reduce_held * 2 / 3) / tasks"),
    ({"stream_reduce": "true", "reduce_concurrency": "9", "backlog_per_task": "3"}, 9,
     "(plan + reduce + reduce_held * 3 / 8) / tasks"),
], ids=["default", "on", "on-9"])
def test_cpu_worker_pool_setting_and_scaling_follow_stream_reduce(terraform, module_dir, variables,
                                                                  concurrency, expression):
    after = planned_resources(terraform, module_dir, *(f"-var={k}={v}" for k, v in variables.items()))
    worker = container(after["aws_ecs_task_definition.worker"])
    env = {e["name"]: e["value"] for e in worker["environment"]}
    settings = settings_from_env(env)
    argv = worker["command"]
    assert settings.stream_reduce is (concurrency is not None)
    if concurrency is None:
        # As before: the caller's PELLETSEG_STREAM_REDUCE dropped, nothing added.
        assert argv == SOLO
        assert env == {k: v for k, v in VARIABLES["environment"].items()
                       if k != "PELLETSEG_STREAM_REDUCE"}
    else:
        assert env["PELLETSEG_STREAM_REDUCE"] == "true"
        assert celery_pool(argv) == ("threads", str(concurrency))
        pool = SOLO.index("--pool")
        assert argv[:pool] + argv[pool + 4:] == SOLO[:pool] + SOLO[pool + 4:]
    assert_pool_fits_stream_reduce(argv, settings, concurrency or 0, "CPU worker task")
    # The scheduler and the migrate task (no planner, no pool) get the caller's environment
    # as before, whatever stream_reduce says.
    for family in ("scheduler", "migrate"):
        other = container(after[f"aws_ecs_task_definition.{family}"])
        assert {e["name"]: e["value"] for e in other["environment"]} == VARIABLES["environment"]
    # Scaling: visible plan + reduce per task; with the stitcher the held reduce messages too.
    policy = after["aws_appautoscaling_policy.backlog"]
    spec = policy["target_tracking_scaling_policy_configuration"][0][
        "customized_metric_specification"][0]
    metrics = {m["id"]: m for m in spec["metrics"]}
    assert [m["id"] for m in spec["metrics"] if m["return_data"]] == ["backlog_per_task"]
    assert metrics["backlog_per_task"]["expression"] == expression
    if concurrency is None:
        assert set(metrics) == {"plan", "reduce", "tasks", "backlog_per_task"}
    else:
        held = metrics["reduce_held"]["metric_stat"][0]["metric"][0]
        assert held["metric_name"] == "ApproximateNumberOfMessagesNotVisible"
        assert held["dimensions"] == [{"name": "QueueName", "value": "pelletseg-t-reduce"}]
    target = policy["target_tracking_scaling_policy_configuration"][0]["target_value"]
    assert target == float(variables.get("backlog_per_task", 2))


@pytest.mark.parametrize("value", ["1", "33", "2.5"])
def test_reduce_concurrency_outside_two_to_thirty_two_is_refused(terraform, module_dir, value):
    proc = terraform("plan", "-input=false", "-no-color", "-lock=false",
                     f"-var=reduce_concurrency={value}", cwd=module_dir, check=False, timeout=180)
    assert proc.returncode != 0
    assert "reduce_concurrency must be a whole number from 2 to 32" in proc.stderr, \
        proc.stderr[-2000:]
