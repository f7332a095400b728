"""Properties of terraform/ read with python-hcl2: module layout, typed and described
variables, queues with dead-letter queues, a private encrypted bucket whose lifecycle rules
follow storage/blobs/layout.py, IMDSv2-only GPU workers on spot scaled on backlog per instance,
least-privilege IAM, and container settings that core/settings.py reads."""

from __future__ import annotations

import json
import re

import pytest

from core.settings import Settings
from queues.names import QUEUES
from storage.blobs import layout
from tests.terraform.hcl import (
    TERRAFORM,
    all_modules,
    blocks,
    env_dirs,
    module_dirs,
    parse_module,
    resolve_list,
)

pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")

MODULE_FILES = ("main.tf", "variables.tf", "outputs.tf", "versions.tf")


@pytest.fixture(scope="module")
def mods():
    return all_modules()


@pytest.fixture(scope="module")
def env(mods):
    return mods["envs/example"]


def resources(mods, rtype):
    """(module path, name, body) of every resource of ``rtype`` in terraform/."""
    return [(path, n, b) for path, m in mods.items() for n, b in m.of_type(rtype)]


# ------------------------------------------------------------------------------ layout
@pytest.mark.parametrize("folder", module_dirs() + env_dirs(), ids=lambda p: p.name)
def test_every_module_has_the_four_files(folder):
    missing = [f for f in MODULE_FILES if not (folder / f).is_file()]
    assert not missing, f"{folder.relative_to(TERRAFORM)} lacks {missing}"


def test_modules_pin_terraform_and_the_aws_provider(mods):
    for path in mods:
        text = (TERRAFORM / path / "versions.tf").read_text()
        assert 'required_version = ">= 1.11.0"' in text, path
        assert 'source  = "hashicorp/aws"' in text and "< 6.0.0" in text, path


def test_every_variable_is_typed_and_described(mods):
    bad = [f"{path}: var.{name}" for path, m in mods.items() for name, body in m.variables.items()
           if not body.get("type") or not str(body.get("description", "")).strip()]
    assert not bad, f"variables without type or description: {bad}"
    assert sum(len(m.variables) for m in mods.values()) > 50


def test_every_output_is_described(mods):
    bad = [f"{path}: {name}" for path, m in mods.items() for name, body in m.outputs.items()
           if not str(body.get("description", "")).strip()]
    assert not bad


def test_example_env_outputs_what_the_cli_needs(env):
    assert {"api_url", "bucket", "queue_urls", "database_endpoint", "storage_url",
            "cli_environment"} <= set(env.outputs)


def test_example_env_composes_every_module(env):
    sources = {body["source"] for body in env.modules.values()}
    expected = {f"../../modules/{p.name}" for p in module_dirs()}
    assert sources == expected


# ------------------------------------------------------------------------------ queues
def test_every_work_queue_has_a_dead_letter_queue_with_redrive(mods):
    queues = resources(mods, "aws_sqs_queue")
    dlq_refs = set()
    for _, name, body in queues:
        policy = body.get("redrive_policy")
        if policy:
            m = re.search(r"deadLetterTargetArn\s*=\s*aws_sqs_queue\.(\w+)\[each\.key\]\.arn", policy)
            assert m, f"redrive policy of {name} names no dead-letter queue: {policy}"
            assert "maxReceiveCount" in policy
            dlq_refs.add(m.group(1))
    assert dlq_refs, "no queue has a redrive policy"
    for path, name, body in queues:
        assert body.get("kms_master_key_id") or body.get("sqs_managed_sse_enabled") is True, \
            f"{path}: queue {name} is not encrypted"
        if name not in dlq_refs:
            assert "redrive_policy" in body, f"{path}: work queue {name} has no dead-letter queue"
    # Only the work queue may redrive into its DLQ.
    allow = resources(mods, "aws_sqs_queue_redrive_allow_policy")
    assert allow and all("byQueue" in b["redrive_allow_policy"] for _, _, b in allow)


def test_queues_are_exactly_the_codes_queues(mods, env):
    queues = mods["modules/queues"]
    default = queues.variables["expected_seconds"]["default"]
    assert set(default) == set(QUEUES)
    passed = env.modules["queues"]["expected_seconds"]
    assert set(passed) == set(QUEUES)
    # A rows message shares its GPU with the worker's other rows in flight: up to N x alone.
    assert passed["rows"] == "${var.expected_row_seconds * var.gpu_rows_in_flight}"


def test_visibility_timeout_is_derived_from_expected_seconds(mods):
    q = mods["modules/queues"]
    assert "var.expected_seconds" in q.locals["visibility"]
    assert "var.visibility_timeout_factor" in q.locals["visibility"]
    (_, main), = [(n, b) for n, b in q.of_type("aws_sqs_queue") if n == "main"]
    assert main["visibility_timeout_seconds"] == "${local.visibility[each.key]}"


def test_queue_names_match_the_codes_prefix_and_dlq_naming(mods, env):
    """SQS names are PELLETSEG_QUEUE_PREFIX + queue and <that>-dlq (queues/deadletters.py)."""
    q = mods["modules/queues"]
    names = {n: b["name"] for n, b in q.of_type("aws_sqs_queue")}
    assert names == {"main": "${local.prefix}${each.key}", "dlq": "${local.prefix}${each.key}-dlq"}
    env_locals = env.locals["common_environment"]
    assert env_locals["PELLETSEG_QUEUE_PREFIX"] == "${module.queues.queue_prefix}"
    assert env.modules["queues"]["max_receive_count"] == "${var.max_attempts}"
    assert env_locals["PELLETSEG_MAX_ATTEMPTS"] == "${tostring(var.max_attempts)}"


# ------------------------------------------------------------------------------ S3
def test_every_bucket_is_private_encrypted_versioned_and_owner_enforced(mods):
    m = mods["modules/storage"]
    buckets = {n for n, _ in m.of_type("aws_s3_bucket")}
    assert buckets == {"data", "logs"}

    def for_bucket(rtype):
        return {b["bucket"].split(".")[1]: b for _, b in m.of_type(rtype)}

    pab = for_bucket("aws_s3_bucket_public_access_block")
    sse = for_bucket("aws_s3_bucket_server_side_encryption_configuration")
    ver = for_bucket("aws_s3_bucket_versioning")
    own = for_bucket("aws_s3_bucket_ownership_controls")
    pol = for_bucket("aws_s3_bucket_policy")
    for b in buckets:
        assert all(pab[b][k] is True for k in ("block_public_acls", "block_public_policy",
                                               "ignore_public_acls", "restrict_public_buckets")), b
        assert ver[b]["versioning_configuration"][0]["status"] == "Enabled", b
        assert own[b]["rule"][0]["object_ownership"] == "BucketOwnerEnforced", b
        algo = sse[b]["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
        assert algo in ("aws:kms", "AES256"), b
        assert b in pol
    data_sse = sse["data"]["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert data_sse["sse_algorithm"] == "aws:kms" and data_sse["kms_master_key_id"]
    # TLS only
    (_, doc), = [(n, b) for n, b in m.data_of_type("aws_iam_policy_document") if n == "data"]
    deny = [s for s in doc["statement"] if s["effect"] == "Deny"]
    assert any(c["variable"] == "aws:SecureTransport" for s in deny for c in s["condition"])


def test_lifecycle_rules_follow_the_storage_layout(mods):
    """uploads/ expire; row checkpoints (jobs/{id}/rows/) expire through the jobs/ prefix and
    the checkpoint tag, since S3 filters take no wildcard."""
    upload_top = layout.upload_key("J", "f.tif").split("/")[0]
    row = layout.row_key("J", 0)
    jobs_top, _, rows_dir = row.split("/")[:3]
    assert (upload_top, jobs_top, rows_dir) == ("uploads", "jobs", "rows")

    m = mods["modules/storage"]
    assert m.locals["uploads_prefix"] == "${local.p}" + upload_top + "/"
    assert m.locals["jobs_prefix"] == "${local.p}" + jobs_top + "/"
    (_, lc), = [(n, b) for n, b in m.of_type("aws_s3_bucket_lifecycle_configuration") if n == "data"]
    rules = {r["id"]: r for r in lc["rule"]}
    assert rules["uploads"]["filter"][0]["prefix"] == "${local.uploads_prefix}"
    assert rules["uploads"]["expiration"][0]["days"] == "${var.upload_expiration_days}"
    assert rules["uploads"]["abort_incomplete_multipart_upload"]
    rows_filter = rules["row-checkpoints"]["filter"][0]["and"][0]
    assert rows_filter["prefix"] == "${local.jobs_prefix}"
    assert rows_filter["tags"] == {"${(local.row_checkpoint.key)}": "${local.row_checkpoint.value}"}
    assert rules["row-checkpoints"]["expiration"][0]["days"] == "${var.row_checkpoint_expiration_days}"
    assert all(r["status"] == "Enabled" for r in rules.values())


def test_cors_allows_presigned_browser_uploads(mods):
    (_, cors), = mods["modules/storage"].of_type("aws_s3_bucket_cors_configuration")
    rule = cors["cors_rule"][0]
    assert "PUT" in rule["allowed_methods"] and "ETag" in rule["expose_headers"]
    assert rule["allowed_origins"] == "${var.cors_allowed_origins}"
    validation = mods["modules/storage"].variables["cors_allowed_origins"]["validation"][0]
    assert "https://" in validation["condition"]


# ------------------------------------------------------------------------------ GPU workers
def test_launch_template_requires_imdsv2_and_encrypts_volumes(mods):
    lts = resources(mods, "aws_launch_template")
    assert lts
    for path, name, body in lts:
        meta = body["metadata_options"][0]
        assert meta["http_tokens"] == "required", f"{path}.{name}: IMDSv1 allowed"
        assert meta["http_put_response_hop_limit"] == 1
        for bdm in body["block_device_mappings"]:
            assert bdm["ebs"][0]["encrypted"] is True
        assert body["image_id"] == "${var.ami_id}"
    ami = mods["modules/gpu_workers"].variables["ami_id"]
    assert "ami-" in ami["validation"][0]["condition"]


def test_gpu_group_is_spot_mixed_instances_from_zero_with_rebalancing(mods):
    (_, asg), = mods["modules/gpu_workers"].of_type("aws_autoscaling_group")
    assert asg["min_size"] == 0
    assert asg["capacity_rebalance"] is True
    mip = asg["mixed_instances_policy"][0]
    dist = mip["instances_distribution"][0]
    assert dist["spot_allocation_strategy"] in ("price-capacity-optimized", "capacity-optimized")
    vars_ = mods["modules/gpu_workers"].variables
    assert vars_["on_demand_percentage_above_base"]["default"] == 0
    assert vars_["on_demand_base_capacity"]["default"] == 0
    override = blocks(mip["launch_template"][0], "override")
    assert override and override[0]["instance_type"] == "${override.value}"
    types = vars_["instance_types"]["default"]
    assert len(types) >= 3 and all(re.match(r"^(g|p)\d", t) for t in types)
    assert "GroupInServiceInstances" in asg["enabled_metrics"]


def test_gpu_group_scales_on_rows_backlog_per_instance(mods, env):
    m = mods["modules/gpu_workers"]
    policies = {n: b for n, b in m.of_type("aws_autoscaling_policy")}
    tt = policies["backlog"]
    assert tt["policy_type"] == "TargetTrackingScaling"
    spec = tt["target_tracking_configuration"][0]["customized_metric_specification"][0]
    metrics = {x["id"]: x for x in spec["metrics"]}
    visible = metrics["visible"]["metric_stat"][0]["metric"][0]
    assert (visible["namespace"], visible["metric_name"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert visible["dimensions"][0]["value"] == "${var.rows_queue_name}"
    in_service = metrics["in_service"]["metric_stat"][0]["metric"][0]
    assert in_service["metric_name"] == "GroupInServiceInstances"
    expr = [x for x in spec["metrics"] if x.get("expression")]
    assert len(expr) == 1 and expr[0]["expression"] == "visible / in_service"
    assert [x["id"] for x in spec["metrics"] if x["return_data"]] == [expr[0]["id"]]
    # From zero: a step policy fires on rows waiting while the group wants 0 instances.
    assert policies["from_zero"]["adjustment_type"] == "ExactCapacity"
    (_, alarm), = m.of_type("aws_cloudwatch_metric_alarm")
    assert alarm["alarm_actions"] == ["${aws_autoscaling_policy.from_zero.arn}"]
    # The env wires the rows queue and derives the target from the expected row time.
    gpu = env.modules["gpu_workers"]
    assert gpu["rows_queue_name"] == '${module.queues.queue_names["rows"]}'
    assert "var.expected_row_seconds" in gpu["backlog_per_instance"]


def test_workers_consume_their_queues_with_prefetch_one(mods):
    tpl = (TERRAFORM / "modules/gpu_workers/user_data.sh.tftpl").read_text()
    assert ('celery -A worker.tasks worker -Q "${queues}" --pool threads '
            "--concurrency ${rows_in_flight}") in tpl
    assert "--pool solo" not in tpl
    assert "--prefetch-multiplier 1" in tpl
    cpu = mods["modules/cpu_workers"].locals["worker_command"]
    assert cpu[:6] == ["celery", "-A", "worker.tasks", "worker", "-Q", '${join(",", var.queues)}']
    assert "--prefetch-multiplier" in cpu


def test_gpu_rows_in_flight_is_one_validated_number_reaching_pool_and_settings(mods, env):
    """gpu_rows_in_flight (root) -> rows_in_flight (module): typed, described, 1..8 whole,
    default 2 in both, the same bounds; the module feeds both the template's pool size and
    PELLETSEG_ROWS_IN_FLIGHT of the env file from it (tests/terraform/test_gpu_user_data.py
    renders the result)."""
    m = mods["modules/gpu_workers"]
    module_var, root_var = m.variables["rows_in_flight"], env.variables["gpu_rows_in_flight"]
    for name, var in (("rows_in_flight", module_var), ("gpu_rows_in_flight", root_var)):
        assert var["type"] == "number" and var["default"] == 2, name
        assert "PELLETSEG_ROWS_IN_FLIGHT" in var["description"], name
        (validation,) = var["validation"]
        cond = validation["condition"]
        for bound in (f"var.{name} >= 1", f"var.{name} <= 8", f"floor(var.{name}) == var.{name}"):
            assert bound in cond, (name, bound)
    assert root_var["validation"][0]["condition"].replace("gpu_rows_in_flight", "rows_in_flight") \
        == module_var["validation"][0]["condition"]
    assert env.modules["gpu_workers"]["rows_in_flight"] == "${var.gpu_rows_in_flight}"
    # The module's own value wins over any PELLETSEG_ROWS_IN_FLIGHT a caller passes.
    assert m.locals["environment"] == (
        "${merge(var.environment, {PELLETSEG_ROWS_IN_FLIGHT = tostring(var.rows_in_flight)})}")
    (_, lt), = m.of_type("aws_launch_template")
    assert "environment = local.environment" in lt["user_data"]
    assert "rows_in_flight = var.rows_in_flight" in lt["user_data"]
    # The env does not set it beside the module (one source).
    assert "PELLETSEG_ROWS_IN_FLIGHT" not in env.locals["gpu_worker_environment"]


def test_stream_reduce_is_one_switch_reaching_the_cpu_workers_pool_and_settings(mods, env):
    """stream_reduce (bool, off) and reduce_concurrency (whole, 2..32, default 4): typed,
    described and validated alike in the env and modules/cpu_workers, and passed down; the
    module is the only source of the worker's pool and of PELLETSEG_STREAM_REDUCE
    (tests/terraform/test_cpu_worker_task.py plans the result)."""
    m = mods["modules/cpu_workers"]
    for where, variables in (("modules/cpu_workers", m.variables), ("envs/example", env.variables)):
        stream, concurrency = variables["stream_reduce"], variables["reduce_concurrency"]
        assert stream["type"] == "bool" and stream["default"] is False, where
        assert "PELLETSEG_STREAM_REDUCE" in stream["description"], where
        assert concurrency["type"] == "number" and concurrency["default"] == 4, where
        # The sizing rule is in the description: one slot per running job, plus the rest.
        assert "jobs expected to run at once" in concurrency["description"], where
        (validation,) = concurrency["validation"]
        for bound in ("var.reduce_concurrency >= 2", "var.reduce_concurrency <= 32",
                      "floor(var.reduce_concurrency) == var.reduce_concurrency"):
            assert bound in validation["condition"], (where, bound)
    assert m.variables["reduce_concurrency"]["validation"] == \
        env.variables["reduce_concurrency"]["validation"]
    passed = env.modules["cpu_workers"]
    assert passed["stream_reduce"] == "${var.stream_reduce}"
    assert passed["reduce_concurrency"] == "${var.reduce_concurrency}"
    # Pool: solo / 1 unless stream_reduce, then threads / reduce_concurrency.
    cmd = m.locals["worker_command"]
    assert cmd[cmd.index("--pool") + 1] == '${var.stream_reduce ? "threads" : "solo"}'
    assert cmd[cmd.index("--concurrency") + 1] == \
        '${var.stream_reduce ? tostring(var.reduce_concurrency) : "1"}'
    # Setting: from stream_reduce only (a caller's value dropped), on the worker container.
    assert m.locals["worker_environment"] == (
        '${merge({for k, v in var.environment : k => v if k != "PELLETSEG_STREAM_REDUCE"}, '
        'var.stream_reduce ? {PELLETSEG_STREAM_REDUCE = "true"} : {})}')
    (_, worker), = [(n, b) for n, b in m.of_type("aws_ecs_task_definition") if n == "worker"]
    assert "environment = local.worker_env_list" in worker["container_definitions"]
    assert "PELLETSEG_STREAM_REDUCE" not in env.locals["cpu_worker_environment"]
    assert "PELLETSEG_STREAM_REDUCE" not in env.locals["common_environment"]


def test_cpu_workers_count_held_reduce_slots_only_with_stream_reduce(mods):
    """Target tracking on visible plan + reduce messages per task as before; with
    stream_reduce the reduce queue's in-flight messages (stitchers hold theirs for a whole
    job) count too, backlog_per_task per reduce_concurrency - 1 of them."""
    m = mods["modules/cpu_workers"]
    (_, policy), = [(n, b) for n, b in m.of_type("aws_appautoscaling_policy") if n == "backlog"]
    spec = policy["target_tracking_scaling_policy_configuration"][0][
        "customized_metric_specification"][0]
    assert [x["id"] for x in spec["metrics"]] == ["plan", "reduce", "tasks", "backlog_per_task"]
    for x in spec["metrics"][:2]:
        assert x["metric_stat"][0]["metric"][0]["metric_name"] == "ApproximateNumberOfMessagesVisible"
    (held,) = blocks(spec, "metrics")[4:]
    assert spec["dynamic"][0]["metrics"]["for_each"] == '${var.stream_reduce ? ["reduce_held"] : []}'
    metric = held["metric_stat"][0]["metric"][0]
    assert (metric["namespace"], metric["metric_name"]) == (
        "AWS/SQS", "ApproximateNumberOfMessagesNotVisible")
    assert metric["dimensions"][0]["value"] == '${var.queue_names["reduce"]}'
    assert held["return_data"] is False
    assert spec["metrics"][-1]["expression"] == (
        '${var.stream_reduce ? "(plan + reduce + reduce_held * ${var.backlog_per_task} / '
        '${var.reduce_concurrency - 1}) / tasks" : "(plan + reduce) / tasks"}')


# ------------------------------------------------------------------------------ IAM
def _statements(mods):
    for path, m in mods.items():
        for name, doc in m.data_of_type("aws_iam_policy_document"):
            for st in blocks(doc, "statement"):
                yield path, name, st, m


def test_no_iam_statement_allows_a_wildcard_action(mods):
    """Allow statements list explicit actions (no "*", "svc:*" or "svc:Get*"), and "*" as a
    resource only for actions that have no resource-level permissions."""
    no_resource_level = {"ecr:GetAuthorizationToken", "logs:DescribeLogGroups",
                         "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                         "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"}
    seen = 0
    for path, name, st, m in _statements(mods):
        if st.get("effect", "Allow") != "Allow":
            continue
        actions = resolve_list(st.get("actions"), m)
        assert actions is not None, f"{path} {name}: actions not statically known: {st.get('actions')}"
        resources = resolve_list(st.get("resources", []), m) or []
        seen += 1
        wild = [a for a in actions if "*" in a]
        assert not wild, f"{path} {name} {st.get('sid')}: wildcard actions {wild}"
        if "*" in resources:
            is_key_policy = any(p.get("type") in ("AWS", "Service") for p in st.get("principals", []))
            assert is_key_policy or set(actions) <= no_resource_level, \
                f"{path} {name} {st.get('sid')}: {actions} on '*'"
    assert seen > 20


def test_one_role_per_component(mods):
    iam = mods["modules/iam"]
    roles = {b["name"] for _, b in iam.of_type("aws_iam_role")}
    for component in ("api", "cpu-worker", "gpu-worker", "scheduler", "flow-logs"):
        assert "${var.name}-" + component in roles
    assert "${var.name}-${each.key}-exec" in roles
    execs = iam.locals["exec_roles"]
    assert set(execs) == {"api", "migrate", "cpu-worker", "scheduler"}
    # Task roles and execution roles are never the same role.
    for path, name, body in resources(mods, "aws_ecs_task_definition"):
        assert body.get("task_role_arn") != body["execution_role_arn"], f"{path}.{name}"


def test_workers_write_only_under_jobs_and_the_api_only_uploads_and_models(mods):
    iam = mods["modules/iam"]
    docs = {n: d for n, d in iam.data_of_type("aws_iam_policy_document")}
    writes = {"s3:PutObject", "s3:DeleteObject"}

    def write_targets(doc, actions=frozenset(writes)):
        return {r for st in blocks(doc, "statement") if actions & set(resolve_list(st["actions"], iam) or [])
                for r in st["resources"]}

    assert write_targets(docs["worker_storage"]) == {"${local.objects.jobs}"}
    assert write_targets(docs["api"], {"s3:PutObject"}) == {"${local.objects.uploads}",
                                                            "${local.objects.models}"}
    # the API deletes a deleted job's objects (DELETE /v1/jobs/{id}), never writes them, and
    # a deleted upload's (DELETE /v1/uploads/{id})
    assert write_targets(docs["api"], {"s3:DeleteObject"}) == {
        "${local.objects.jobs}", "${local.objects.models}", "${local.objects.uploads}"}
    assert iam.locals["objects"]["jobs"] == "${var.bucket_arn}/${local.p}jobs/*"


# ------------------------------------------------------------------------------ database
def test_database_is_private_encrypted_backed_up_and_password_never_in_state(mods, env):
    (_, db), = mods["modules/database"].of_type("aws_db_instance")
    assert db["storage_encrypted"] is True and db["publicly_accessible"] is False
    assert db["backup_retention_period"] == "${var.backup_retention_days}"
    validation = mods["modules/database"].variables["backup_retention_days"]["validation"][0]
    assert ">= 7" in validation["condition"]
    assert "password" not in db and db["password_wo"].startswith("${ephemeral.")
    (_, secret), = mods["modules/database"].of_type("aws_secretsmanager_secret_version")
    assert "secret_string" not in secret and "postgresql+psycopg://" in secret["secret_string_wo"]
    assert env.modules["database"]["subnet_ids"] == "${module.network.private_subnet_ids}"
    assert env.locals["secrets"]["PELLETSEG_DATABASE_URL"] == "${module.database.url_secret_arn}"


# ------------------------------------------------------------------------------ API
def test_api_is_fargate_behind_https_with_an_ecr_image(mods, env):
    api = mods["modules/api_service"]
    listeners = [b for _, b in api.of_type("aws_lb_listener")]
    assert [(x["port"], x["protocol"]) for x in listeners] == [(443, "HTTPS")]
    assert listeners[0]["ssl_policy"].startswith("ELBSecurityPolicy-TLS13")
    (_, svc), = api.of_type("aws_ecs_service")
    assert svc["launch_type"] == "FARGATE"
    (_, td), = api.of_type("aws_ecs_task_definition")
    assert td["requires_compatibilities"] == ["FARGATE"]
    assert env.locals["api_image"].startswith('${module.registry.repository_urls["api"]}')
    assert env.modules["api"]["image"] == "${local.api_image}"


def test_the_fargate_workers_run_the_image_without_torch_and_the_gpu_workers_the_cuda_one(
        mods, env):
    """Fargate pulls a task's image at every start: the planners, reducers and scheduler run
    deploy/Dockerfile.worker-cpu (slim, no torch), and may pull only that repository; the GPU
    rows workers run deploy/Dockerfile.worker."""
    assert env.locals["cpu_worker_image"].startswith(
        '${module.registry.repository_urls["worker-cpu"]}')
    assert env.locals["worker_image"].startswith('${module.registry.repository_urls["worker"]}')
    assert env.modules["cpu_workers"]["worker_image"] == "${local.cpu_worker_image}"
    assert env.modules["gpu_workers"]["image"] == "${local.worker_image}"
    registry = mods["modules/registry"]
    assert "worker-cpu" in registry.variables["repositories"]["default"]
    roles = mods["modules/iam"].locals["exec_roles"]
    assert {k: v["repository"] for k, v in roles.items()} == {
        "api": "api", "migrate": "api", "cpu-worker": "worker-cpu", "scheduler": "worker-cpu"}


# ------------------------------------------------------------------------------ settings
def _setting_names_in(text: str) -> set[str]:
    return set(re.findall(r"\bPELLETSEG_[A-Z0-9_]+\b", text))


def test_every_pelletseg_variable_in_terraform_is_a_setting():
    """No drift: each PELLETSEG_* name written anywhere in terraform/ is a field of
    core/settings.py's Settings (derived from the class, not a copy)."""
    fields = {f"PELLETSEG_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for path in TERRAFORM.rglob("*"):
        if path.is_file() and path.suffix in (".tf", ".tftpl", ".example"):
            used |= _setting_names_in(path.read_text())
    assert used, "terraform/ sets no PELLETSEG_* variable"
    assert used <= fields, f"not in Settings: {sorted(used - fields)}"
    must = {"PELLETSEG_DATABASE_URL", "PELLETSEG_BROKER_URL", "PELLETSEG_BROKER_TRANSPORT_OPTIONS",
            "PELLETSEG_STORAGE_URL", "PELLETSEG_QUEUE_PREFIX"}
    assert must <= used


def test_containers_get_broker_storage_and_database_settings(env):
    common = env.locals["common_environment"]
    assert common["PELLETSEG_BROKER_URL"] == "sqs://"
    opts = env.locals["broker_transport_options"]
    assert "region" in opts and "predefined_queues" in opts
    assert common["PELLETSEG_STORAGE_URL"] == "${module.storage.storage_url}"
    schemes = common["PELLETSEG_ALLOWED_SOURCE_SCHEMES"]
    assert json.loads(schemes.removeprefix("${jsonencode(").removesuffix(")}").replace("'", '"')) == ["s3"]
    for env_name in ("api_environment", "cpu_worker_environment", "gpu_worker_environment"):
        assert "local.common_environment" in env.locals[env_name]
    assert "PELLETSEG_API_HOST" in env.locals["api_environment"]


def test_retention_reaches_the_workers_only_when_set(env):
    var = env.variables["retention_days"]
    assert var["type"] == "number" and var["default"] is None and var["description"]
    assert "var.retention_days > 0" in var["validation"][0]["condition"]
    retention = env.locals["retention_environment"]
    assert "var.retention_days == null ? {} :" in retention
    assert "PELLETSEG_RETENTION_DAYS" in retention
    for name in ("cpu_worker_environment", "gpu_worker_environment"):  # they reconcile
        assert "local.retention_environment" in env.locals[name]
    assert "retention" not in env.locals["api_environment"]


def test_parse_module_skips_test_overrides(tmp_path):
    """Override files generated by the moto test never count as configuration."""
    (tmp_path / "main.tf").write_text('variable "x" {\n  type        = string\n  description = "x"\n}\n')
    (tmp_path / "moto_override.tf").write_text('variable "y" {}\n')
    assert set(parse_module(tmp_path).variables) == {"x"}


def test_tfvars_example_sets_only_declared_variables(env):
    """terraform.tfvars.example names only variables of the env, and every variable without
    a default."""
    import hcl2

    example = TERRAFORM / "envs/example/terraform.tfvars.example"
    values = {k: v for k, v in hcl2.loads(example.read_text()).items() if not k.startswith("__")}
    assert set(values) <= set(env.variables), sorted(set(values) - set(env.variables))
    required = {n for n, b in env.variables.items() if "default" not in b}
    assert required <= set(values), sorted(required - set(values))


def test_row_checkpoint_lifecycle_tag_is_the_one_workers_write(mods):
    from storage.blobs.layout import ROW_CHECKPOINT_TAG

    variables = mods["modules/storage"].variables
    tag = {variables["row_checkpoint_tag_key"]["default"]:
           variables["row_checkpoint_tag_value"]["default"]}
    assert tag == ROW_CHECKPOINT_TAG
