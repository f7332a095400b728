"""`terraform plan` of the whole example env and `terraform apply` + `destroy` of everything
moto can create in reasonable time, against a private moto server on 127.0.0.1 standing in for
AWS (provider endpoints and skip flags in a test-only override file). The applied resources
are then read back through boto3 and used by the project's own code: the queue wiring sends a
Celery task into the rows queue Terraform made, and the blob store writes a KMS-encrypted row
checkpoint under the bucket prefix.

Left out of the apply (still planned, and their properties asserted in the plan and by the
HCL tests): see NOT_APPLIED_ON_MOTO."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from pathlib import Path

import pytest

from core.settings import Settings
from queues.names import QUEUES
from tests.deploy.conftest import assert_pool_fits_rows_in_flight, celery_pool, settings_from_env
from tests.terraform.conftest import offline_provider, user_data_env_file, user_data_worker_argv
from tests.terraform.hcl import parse_module

pytestmark = pytest.mark.slow
boto3 = pytest.importorskip("boto3")
pytest.importorskip("hcl2", reason="python-hcl2 is not installed (pip install python-hcl2)")

REGION = "us-east-1"
ENVIRONMENT = "moto"
EXPECTED = {"plan": 120, "rows": 30, "reduce": 600}
FACTOR, STARTUP, MAX_ATTEMPTS = 3, 300, 3
#: gpu_rows_in_flight (not the default 2, to see the value travel); a rows message may take
#: up to this many times its expected seconds (its GPU is shared), so its visibility grows.
ROWS_IN_FLIGHT = 3
IN_FLIGHT = {"plan": 1, "rows": ROWS_IN_FLIGHT, "reduce": 1}
MOTO_SERVICES = ("acm", "applicationautoscaling", "autoscaling", "cloudwatch", "ec2", "ecr", "ecs",
                 "elbv2", "iam", "kms", "logs", "rds", "s3", "secretsmanager", "sqs", "sts",
                 "wafv2")

#: Resources (module.<call>.<type>.<name>) planned but not applied on moto, and why.
NOT_APPLIED_ON_MOTO = {
    "module.queues.aws_sqs_queue_redrive_allow_policy.dlq":
        "moto has no RedriveAllowPolicy attribute; the provider waits for it until it times out",
    "module.queues.aws_sqs_queue_policy.main": "applies, but the provider's propagation check "
                                               "polls ~25 s on create and again on delete",
    "module.queues.aws_sqs_queue_policy.dlq": "as the work queues' policies",
    "module.storage.aws_s3_bucket_lifecycle_configuration.data":
        "moto reshapes tag filters, so the provider polls until its timeout",
    "module.storage.aws_s3_bucket_lifecycle_configuration.logs": "as the data bucket's (~55 s)",
    "module.storage.aws_s3_bucket_logging.data":
        "moto demands the log-delivery ACL that BucketOwnerEnforced forbids",
    "module.database.aws_db_instance.this": "applies, but the provider's status waiter takes "
                                            "~2.5 min on moto",
    "module.database.aws_secretsmanager_secret_version.database_url":
        "needs the database instance's address",
    "module.api.aws_lb.this": "applies, but the provider waits ~60 s for the load balancer",
    "module.api.aws_lb_listener.https": "needs the load balancer",
    "module.api.aws_lb_listener_rule.metrics_allowed": "needs the listener",
    "module.api.aws_lb_listener_rule.metrics_hidden": "needs the listener",
    "module.api.aws_wafv2_web_acl_association.this": "needs the load balancer",
    "module.api.aws_ecs_service.this": "depends on the HTTPS listener",
    "module.api.aws_appautoscaling_target.this": "needs the API service",
    "module.api.aws_appautoscaling_policy.cpu": "needs the API service",
    "module.cpu_workers.aws_appautoscaling_target.worker":
        "moto's Application Auto Scaling never reports ECS targets as registered",
    "module.cpu_workers.aws_appautoscaling_policy.backlog": "needs the scalable target",
}


def override_tf(endpoint: str) -> str:
    """Provider pointed at moto, fake credentials, local state (test-only override file)."""
    endpoints = "\n".join(f'    {s} = "{endpoint}"' for s in MOTO_SERVICES)
    extra = f"  s3_use_path_style           = true\n  endpoints {{\n{endpoints}\n  }}\n"
    return 'terraform {\n  backend "local" {}\n}\n\n' + offline_provider(REGION, extra)


def tfvars(certificate_arn: str) -> dict:
    return {
        "region": REGION, "environment": ENVIRONMENT, "certificate_arn": certificate_arn,
        "gpu_ami_id": "ami-12c6146b", "api_image_tag": "test", "worker_image_tag": "test",
        "cors_allowed_origins": ["https://pellets.example.com"], "protect_from_destroy": False,
        "expected_plan_seconds": EXPECTED["plan"], "expected_row_seconds": EXPECTED["rows"],
        "expected_reduce_seconds": EXPECTED["reduce"], "visibility_timeout_factor": FACTOR,
        "startup_seconds": STARTUP, "max_attempts": MAX_ATTEMPTS, "gpu_max_instances": 4,
        "metrics_allowed_cidrs": ["10.0.0.0/8"], "gpu_rows_in_flight": ROWS_IN_FLIGHT,
    }


def applied_targets(env_dir: Path) -> list[str]:
    """module.<call>.<type>.<name> of every resource of the env's modules, minus
    NOT_APPLIED_ON_MOTO (read from the HCL, so a new resource is applied by default)."""
    env = parse_module(env_dir)
    targets = []
    for call, body in env.modules.items():
        mod = parse_module((env_dir / body["source"]).resolve())
        targets += [f"module.{call}.{t}.{n}" for t, n, _ in mod.resources]
    unknown = set(NOT_APPLIED_ON_MOTO) - set(targets)
    assert not unknown, f"NOT_APPLIED_ON_MOTO names resources that no longer exist: {unknown}"
    return sorted(set(targets) - set(NOT_APPLIED_ON_MOTO))


def client(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def statements(policy: str | dict) -> list[dict]:
    doc = json.loads(policy) if isinstance(policy, str) else policy
    sts = doc["Statement"]
    return sts if isinstance(sts, list) else [sts]


def as_list(x) -> list:
    return x if isinstance(x, list) else [x]


@pytest.fixture
def moto_env(terraform, terraform_copy, moto_aws, tmp_path):
    """Two initialised copies of the example env against moto: one to plan in full, one to
    apply; yields (apply dir, plan dir, endpoint)."""
    cert = client("acm", moto_aws).request_certificate(DomainName="pellets.example.com")
    values = tfvars(cert["CertificateArn"])
    dirs = []
    for name in ("apply", "plan"):
        root = terraform_copy if name == "apply" else tmp_path / "plan-copy" / "terraform"
        if name == "plan":
            shutil.copytree(terraform_copy, root)
        env_dir = root / "envs" / "example"
        (env_dir / "moto_override.tf").write_text(override_tf(moto_aws))
        (env_dir / "moto.auto.tfvars.json").write_text(json.dumps(values))
        terraform.init(env_dir)
        dirs.append(env_dir)
    yield dirs[0], dirs[1], moto_aws


def test_example_env_plans_applies_and_destroys_on_moto(terraform, moto_env, monkeypatch):
    apply_dir, plan_dir, endpoint = moto_env
    targets = applied_targets(apply_dir)
    planning = None
    try:
        terraform("apply", "-input=false", "-no-color", "-auto-approve", "-parallelism=20",
                  *[f"-target={t}" for t in targets], cwd=apply_dir, timeout=420)
        # The full plan (CPU-bound) runs beside the checks and the destroy (which mostly
        # wait on the provider's polling), not beside the apply's own plan.
        planning = terraform.popen("plan", "-input=false", "-no-color", "-lock=false",
                                   "-out=full.tfplan", cwd=plan_dir, log=plan_dir / "plan.log")
        outputs = json.loads(terraform("output", "-json", cwd=apply_dir).stdout)
        check_applied(endpoint, outputs, monkeypatch)
    finally:
        destroy = ["destroy", "-input=false", "-no-color", "-auto-approve", "-parallelism=20"]
        try:
            terraform(*destroy, "-refresh=false", cwd=apply_dir, timeout=180)
        except AssertionError as e:
            # moto now and then revokes a security group rule twice under parallel deletes
            # ("InvalidPermission.NotFound"); a second destroy, refreshing state, finishes
            # the job, and the state must still end empty (asserted below)
            if "InvalidPermission.NotFound" not in str(e):
                raise
            terraform(*destroy, cwd=apply_dir, timeout=180)
        if planning is not None:
            assert planning.wait(300) == 0, (plan_dir / "plan.log").read_text()[-4000:]
    left = terraform("state", "list", cwd=apply_dir, check=False).stdout.split()
    assert left == [], f"destroy left {left}"
    plan = json.loads(terraform("show", "-json", "full.tfplan", cwd=plan_dir).stdout)
    check_full_plan(plan)


def check_applied(endpoint: str, outputs: dict, monkeypatch) -> None:
    prefix = f"pelletseg-{ENVIRONMENT}-"
    account = client("sts", endpoint).get_caller_identity()["Account"]

    # --- S3: private, KMS-encrypted, versioned, CORS for presigned uploads
    s3 = client("s3", endpoint)
    bucket = outputs["bucket"]["value"]
    assert bucket == f"pelletseg-{ENVIRONMENT}-{account}-{REGION}"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    cors = s3.get_bucket_cors(Bucket=bucket)["CORSRules"][0]
    assert "PUT" in cors["AllowedMethods"] and "ETag" in cors["ExposeHeaders"]
    policy = statements(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    assert any(s["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(s) for s in policy)

    # --- SQS: plan/rows/reduce with DLQs, derived visibility, maxReceiveCount = max_attempts
    sqs = client("sqs", endpoint)
    urls = outputs["queue_urls"]["value"]
    assert set(urls) == set(QUEUES)
    for q in QUEUES:
        attrs = sqs.get_queue_attributes(QueueUrl=urls[q], AttributeNames=["All"])["Attributes"]
        assert attrs["QueueArn"].endswith(f":{prefix}{q}")
        assert int(attrs["VisibilityTimeout"]) == math.ceil(
            EXPECTED[q] * IN_FLIGHT[q] * FACTOR + STARTUP)
        redrive = json.loads(attrs["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"].endswith(f":{prefix}{q}-dlq")
        assert int(redrive["maxReceiveCount"]) == MAX_ATTEMPTS
        assert attrs.get("KmsMasterKeyId")

    # --- GPU workers: IMDSv2 only, encrypted volumes, spot mixed instances from 0, backlog scaling
    ec2 = client("ec2", endpoint)
    asg_name = outputs["gpu_autoscaling_group"]["value"]
    asc = client("autoscaling", endpoint)
    (asg,) = asc.describe_auto_scaling_groups(AutoScalingGroupNames=[asg_name])["AutoScalingGroups"]
    assert asg["MinSize"] == 0 and asg["CapacityRebalance"] is True
    # (moto does not echo MixedInstancesPolicy back: the plan check below covers it)
    (lt,) = ec2.describe_launch_templates(
        LaunchTemplateNames=[f"{prefix}gpu-worker"])["LaunchTemplates"]
    (ver,) = ec2.describe_launch_template_versions(
        LaunchTemplateId=lt["LaunchTemplateId"])["LaunchTemplateVersions"]
    data = ver["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert all(b["Ebs"]["Encrypted"] for b in data["BlockDeviceMappings"])
    # The boot script: each GPU's worker runs a threads pool of gpu_rows_in_flight rows, and
    # its env file says the same PELLETSEG_ROWS_IN_FLIGHT.
    script = base64.b64decode(data["UserData"]).decode()
    gpu_env = user_data_env_file(script)
    gpu_settings = settings_from_env(gpu_env)
    assert gpu_settings.rows_in_flight == ROWS_IN_FLIGHT and gpu_settings.device == "cuda"
    argv = user_data_worker_argv(script)
    assert argv[argv.index("-Q") + 1] == f"{prefix}rows"
    assert celery_pool(argv) == ("threads", str(ROWS_IN_FLIGHT))
    assert_pool_fits_rows_in_flight(argv, gpu_settings, "GPU worker user data")
    policies = {p["PolicyType"]: p for p in asc.describe_policies(AutoScalingGroupName=asg_name)["ScalingPolicies"]}
    spec = policies["TargetTrackingScaling"]["TargetTrackingConfiguration"]["CustomizedMetricSpecification"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in spec["Metrics"] if "MetricStat" in m}
    assert names == {"ApproximateNumberOfMessagesVisible", "GroupInServiceInstances"}
    assert [m["Expression"] for m in spec["Metrics"] if m.get("Expression")] == ["visible / in_service"]
    # From the one-row time, not x ROWS_IN_FLIGHT (modules/gpu_workers says why).
    assert policies["TargetTrackingScaling"]["TargetTrackingConfiguration"]["TargetValue"] == 600 // EXPECTED["rows"]

    # --- IAM: every inline policy of the project's roles, as AWS stores it
    iam = client("iam", endpoint)
    roles = [r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].startswith(prefix)]
    assert len(roles) >= 9
    no_resource_level = {"ecr:GetAuthorizationToken", "logs:DescribeLogGroups",
                         "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
                         "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"}
    for role in roles:
        for pname in iam.list_role_policies(RoleName=role)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=role, PolicyName=pname)["PolicyDocument"]
            for st in statements(doc):
                if st["Effect"] != "Allow":
                    continue
                actions = as_list(st["Action"])
                assert not [a for a in actions if "*" in a], f"{role}: {actions}"
                if "*" in as_list(st["Resource"]):
                    assert set(actions) <= no_resource_level, f"{role}: {actions} on *"

    # --- ECS task definitions: the container environment is made of Settings names
    ecs = client("ecs", endpoint)
    fields = {f"PELLETSEG_{n.upper()}" for n in Settings.model_fields}
    api_td = ecs.describe_task_definition(taskDefinition=f"pelletseg-{ENVIRONMENT}-api")["taskDefinition"]
    (container,) = api_td["containerDefinitions"]
    env = {e["name"]: e["value"] for e in container["environment"]}
    secrets = {s["name"] for s in container["secrets"]}
    assert set(env) | secrets <= fields
    assert secrets == {"PELLETSEG_DATABASE_URL", "PELLETSEG_WEBHOOK_SECRET"}
    assert container["command"][:2] == ["pelletseg", "serve"] and container["readonlyRootFilesystem"]
    cpu_td = ecs.describe_task_definition(taskDefinition=f"pelletseg-{ENVIRONMENT}-cpu-worker")["taskDefinition"]
    cmd = cpu_td["containerDefinitions"][0]["command"]
    assert cmd[cmd.index("-Q") + 1] == f"{prefix}plan,{prefix}reduce"

    # --- The webhook key was generated at apply time (ephemeral, write-only)
    sm = client("secretsmanager", endpoint)
    key = sm.get_secret_value(SecretId=f"pelletseg-{ENVIRONMENT}/webhook-secret")["SecretString"]
    assert re.fullmatch(r"[A-Za-z0-9]{64}", key)

    # --- The project's own code over what Terraform made: settings as the containers get them
    opts = json.loads(env["PELLETSEG_BROKER_TRANSPORT_OPTIONS"])
    assert opts["region"] == REGION
    assert opts["predefined_queues"] == {f"{prefix}{q}": {"url": urls[q]} for q in QUEUES}
    settings = Settings(
        broker_url=f"sqs://testing:testing@{endpoint.removeprefix('http://')}",
        broker_transport_options=dict(opts, is_secure=False),
        queue_prefix=env["PELLETSEG_QUEUE_PREFIX"], storage_url=env["PELLETSEG_STORAGE_URL"])
    from queues.app import make_celery, send
    from queues.names import ROW_TASK

    app = make_celery(settings)
    send(app, ROW_TASK, "job-1", 7)
    (got,) = sqs.receive_message(QueueUrl=urls["rows"], WaitTimeSeconds=1)["Messages"]
    envelope = json.loads(base64.b64decode(got["Body"]))
    assert envelope["headers"]["task"] == ROW_TASK
    assert json.loads(base64.b64decode(envelope["body"]))[0] == ["job-1", 7]

    for k, v in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    from storage.blobs import layout
    from storage.blobs.store import BlobStore
    from storage.errors import StorageError

    # An explicit endpoint: fsspec caches S3 filesystems by their arguments, and an earlier
    # test's filesystem would otherwise point at another moto server.
    store = BlobStore(settings.resolved_storage_url, client_kwargs={"endpoint_url": endpoint})
    key = layout.row_key("job-1", 7)
    # moto is plain HTTP: the bucket's TLS-only policy refuses the write, as AWS would ...
    with pytest.raises(StorageError, match="Forbidden"):
        store.put_bytes(key, b"checkpoint")
    # ... so lift it to see the write land under the prefix, KMS-encrypted by default.
    s3.delete_bucket_policy(Bucket=bucket)
    store.put_bytes(key, b"checkpoint")
    head = s3.head_object(Bucket=bucket, Key=f"pelletseg/{layout.row_key('job-1', 7)}")
    assert head["ServerSideEncryption"] == "aws:kms"
    # Leave the versioned bucket empty (every version and delete marker) for destroy.
    versions = s3.list_object_versions(Bucket=bucket)
    for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])


def check_full_plan(plan: dict) -> None:
    changes = {r["address"]: r for r in plan["resource_changes"] if r["mode"] == "managed"}
    assert len(changes) >= 140
    assert all(r["change"]["actions"] == ["create"] for r in changes.values())
    planned = {re.sub(r"\[[^\]]*\]$", "", a) for a in changes}
    assert set(NOT_APPLIED_ON_MOTO) <= planned
    after = {a: r["change"]["after"] for a, r in changes.items()}
    asg = after["module.gpu_workers.aws_autoscaling_group.this"]
    assert asg["min_size"] == 0 and asg["capacity_rebalance"] is True
    mip = asg["mixed_instances_policy"][0]
    dist = mip["instances_distribution"][0]
    assert dist["on_demand_percentage_above_base_capacity"] == 0
    assert dist["on_demand_base_capacity"] == 0
    assert dist["spot_allocation_strategy"] == "price-capacity-optimized"
    assert len(mip["launch_template"][0]["override"]) >= 3
    lt = after["module.gpu_workers.aws_launch_template.this"]
    assert lt["metadata_options"][0]["http_tokens"] == "required"
    db = after["module.database.aws_db_instance.this"]
    assert db["storage_encrypted"] is True and db["publicly_accessible"] is False
    assert db["backup_retention_period"] >= 7 and db.get("password") is None
    listener = after["module.api.aws_lb_listener.https"]
    assert listener["protocol"] == "HTTPS" and listener["port"] == 443
    rules = after["module.storage.aws_s3_bucket_lifecycle_configuration.data"]["rule"]
    assert {r["id"] for r in rules} >= {"uploads", "row-checkpoints"}
    assert after["module.cpu_workers.aws_appautoscaling_target.worker"]["min_capacity"] >= 1
