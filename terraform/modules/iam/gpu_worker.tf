# The GPU workers' EC2 role and instance profile. See main.tf for the overview.

# ---------------------------------------------------------------------------------------
# gpu-worker (EC2 instance profile): rows
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "gpu_worker" {
  source_policy_documents = [data.aws_iam_policy_document.worker_storage.json]
  statement {
    sid       = "ConsumeRows"
    actions   = local.queue_read
    resources = [var.queue_arns["rows"]]
  }
  statement {
    sid       = "EnqueueStages" # reduce after the last row, released rows (spot), webhooks (plan)
    actions   = local.queue_write
    resources = values(var.queue_arns)
  }
  statement {
    sid       = "EcrLogin" # no resource-level permissions exist for this
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullWorkerImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [var.repository_arns["worker"]]
  }
  statement {
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = var.secret_arns
  }
  statement {
    sid       = "DecryptSecrets"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["secretsmanager.${local.region}.amazonaws.com"]
    }
  }
  statement {
    sid       = "WriteWorkerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arns["gpu-worker"]}:log-stream:*"]
  }
  statement {
    sid       = "FinishOwnTermination"
    actions   = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
    resources = [local.gpu_asg_arn]
  }
}

resource "aws_iam_role" "gpu_worker" {
  name               = "${var.name}-gpu-worker"
  description        = "pelletseg GPU worker instances: rows"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = merge(var.tags, { Component = "gpu-worker" })
}

resource "aws_iam_role_policy" "gpu_worker" {
  name   = "gpu-worker"
  role   = aws_iam_role.gpu_worker.id
  policy = data.aws_iam_policy_document.gpu_worker.json
}

# Session Manager instead of SSH (no key pairs, no inbound port).
resource "aws_iam_role_policy_attachment" "gpu_worker_ssm" {
  count      = var.enable_ssm ? 1 : 0
  role       = aws_iam_role.gpu_worker.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gpu_worker" {
  name = "${var.name}-gpu-worker"
  role = aws_iam_role.gpu_worker.name
  tags = var.tags
}
