# One IAM role per component, each with only what that component does:
#
#   api          presigns uploads and downloads, writes uploads, publishes bundled models,
#                sends plan/rows/reduce messages (submit, resume)
#   cpu-worker   plan and reduce: reads sources and models, writes jobs/*, consumes plan and
#                reduce, sends to the three queues (rows, reduce, reconciler, webhooks)
#   gpu-worker   rows: reads sources and models, writes jobs/*, consumes rows, sends to the
#                three queues (reduce after the last row, spot-released rows, webhooks);
#                pulls its image, reads its secrets, writes its logs, completes its
#                own termination lifecycle hook (EC2 instance profile)
#   scheduler    celery beat: sends the periodic reconcile task to plan, nothing else
#   migrate      `pelletseg migrate` / `pelletseg apikey`: database only (no task role)
#   <x>-exec     the ECS agent of each task family: pulls its image, writes its log group,
#                reads the secrets (database URL, webhook key)
#   flow-logs    VPC Flow Logs delivery into its log group
#
# No statement grants a wildcard action, and "*" resources appear only for actions that
# have no resource-level permissions (ecr:GetAuthorizationToken, ssmmessages:*Channel,
# logs:DescribeLogGroups).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  p          = var.storage_prefix == "" ? "" : "${var.storage_prefix}/"

  objects = {
    uploads = "${var.bucket_arn}/${local.p}uploads/*"
    jobs    = "${var.bucket_arn}/${local.p}jobs/*"
    models  = "${var.bucket_arn}/${local.p}models/*"
  }
  # s3:prefix values that s3fs lists under (folder, folder/, folder/...).
  list_prefixes = flatten([for f in ["uploads", "jobs", "models"] : ["${local.p}${f}", "${local.p}${f}/*"]])

  kms_via = ["s3.${local.region}.amazonaws.com", "sqs.${local.region}.amazonaws.com"]

  gpu_asg_arn = "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${var.gpu_asg_name}"

  queue_read  = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ReceiveMessage"]
  queue_write = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]

  # ECS task families and what their agent (execution role) may touch.
  exec_roles = {
    api        = { repository = "api", log_group = "api", secret = true }
    migrate    = { repository = "api", log_group = "migrate", secret = true }
    cpu-worker = { repository = "worker-cpu", log_group = "cpu-worker", secret = true }
    scheduler  = { repository = "worker-cpu", log_group = "scheduler", secret = false }
  }
}

# ---------------------------------------------------------------------------------------
# Trust policies
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "flow_logs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["vpc-flow-logs.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

# ---------------------------------------------------------------------------------------
# Shared statement blocks (rendered into each role's own policy)
# ---------------------------------------------------------------------------------------

# Workers: read sources (uploads/, jobs/{id}/source.tif, external buckets) and models,
# write job outputs and row checkpoints (atomic write = PUT temp key, copy, delete).
data "aws_iam_policy_document" "worker_storage" {
  statement {
    sid       = "ListStorePrefixes"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.list_prefixes
    }
  }
  statement {
    sid       = "BucketLocation"
    actions   = ["s3:GetBucketLocation"]
    resources = [var.bucket_arn]
  }
  statement {
    sid       = "ReadSourcesAndModels"
    actions   = ["s3:GetObject", "s3:GetObjectTagging"]
    resources = [local.objects.uploads, local.objects.models, local.objects.jobs]
  }
  statement {
    sid = "WriteJobOutputs"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
      "s3:ListMultipartUploadParts",
      "s3:PutObject",
      "s3:PutObjectTagging",
    ]
    resources = [local.objects.jobs]
  }
  dynamic "statement" {
    for_each = length(var.extra_source_bucket_arns) > 0 ? [1] : []
    content {
      sid       = "ReadExternalSources"
      actions   = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"]
      resources = concat(var.extra_source_bucket_arns, [for b in var.extra_source_bucket_arns : "${b}/*"])
    }
  }
  statement {
    sid       = "UseProjectKeyForS3AndSqs"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = local.kms_via
    }
  }
}

# ---------------------------------------------------------------------------------------
# VPC flow logs
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "flow_logs" {
  statement {
    sid       = "DeliverFlowLogs"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [var.log_group_arns["vpc-flow-logs"], "${var.log_group_arns["vpc-flow-logs"]}:log-stream:*"]
  }
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-flow-logs"
  description        = "VPC Flow Logs delivery for pelletseg"
  assume_role_policy = data.aws_iam_policy_document.flow_logs_assume.json
  tags               = merge(var.tags, { Component = "flow-logs" })
}

resource "aws_iam_role_policy" "flow_logs" {
  name   = "flow-logs"
  role   = aws_iam_role.flow_logs.id
  policy = data.aws_iam_policy_document.flow_logs.json
}
