# Roles of the ECS task families: task roles (what the process may do) and execution
# roles (what the ECS agent may do for it). See main.tf for the overview.

# ---------------------------------------------------------------------------------------
# api (ECS task role)
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "api" {
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
    sid       = "BucketLocationAndOpenUploads"
    actions   = ["s3:GetBucketLocation", "s3:ListBucketMultipartUploads"]
    resources = [var.bucket_arn]
  }
  statement {
    # DeleteObject: DELETE /v1/uploads/{id} (its file, manifest and deletion mark)
    sid       = "PresignAndManageUploads"
    actions   = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"]
    resources = [local.objects.uploads]
  }
  statement {
    sid       = "PresignResultDownloads"
    actions   = ["s3:GetObject"]
    resources = [local.objects.jobs]
  }
  statement {
    sid       = "DeleteJobObjects" # DELETE /v1/jobs/{id}: a deleted job's outputs and checkpoints
    actions   = ["s3:DeleteObject"]
    resources = [local.objects.jobs]
  }
  statement {
    sid       = "PublishBundledModels"
    actions   = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    resources = [local.objects.models]
  }
  statement {
    sid       = "EnqueueWork"
    actions   = local.queue_write
    resources = values(var.queue_arns)
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
  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid       = "EcsExecChannels" # no resource-level permissions exist for these
      actions   = ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
      resources = ["*"]
    }
  }
  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid       = "EcsExecSessionLog"
      actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
      resources = [var.log_group_arns["ecs-exec"], "${var.log_group_arns["ecs-exec"]}:log-stream:*"]
    }
  }
  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid       = "EcsExecFindLogGroup" # no resource-level permissions exist for this
      actions   = ["logs:DescribeLogGroups"]
      resources = ["*"]
    }
  }
  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid       = "EcsExecSessionEncryption"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [var.kms_key_arn]
    }
  }
}

resource "aws_iam_role" "api" {
  name               = "${var.name}-api"
  description        = "pelletseg API task: presign, uploads, enqueue"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(var.tags, { Component = "api" })
}

resource "aws_iam_role_policy" "api" {
  name   = "api"
  role   = aws_iam_role.api.id
  policy = data.aws_iam_policy_document.api.json
}

# ---------------------------------------------------------------------------------------
# cpu-worker (ECS task role): plan and reduce
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "cpu_worker" {
  source_policy_documents = [data.aws_iam_policy_document.worker_storage.json]
  statement {
    sid       = "ConsumePlanAndReduce"
    actions   = local.queue_read
    resources = [var.queue_arns["plan"], var.queue_arns["reduce"]]
  }
  statement {
    sid       = "EnqueueStages" # rows after planning, reduce, reconciler re-sends, webhooks (plan)
    actions   = local.queue_write
    resources = values(var.queue_arns)
  }
}

resource "aws_iam_role" "cpu_worker" {
  name               = "${var.name}-cpu-worker"
  description        = "pelletseg CPU worker task: plan and reduce"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(var.tags, { Component = "cpu-worker" })
}

resource "aws_iam_role_policy" "cpu_worker" {
  name   = "cpu-worker"
  role   = aws_iam_role.cpu_worker.id
  policy = data.aws_iam_policy_document.cpu_worker.json
}

# ---------------------------------------------------------------------------------------
# scheduler (ECS task role): celery beat sends the reconcile task to plan
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "EnqueueReconcile"
    actions   = local.queue_write
    resources = [var.queue_arns["plan"]]
  }
  statement {
    sid       = "UseProjectKeyForSqs"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-scheduler"
  description        = "pelletseg scheduler task (celery beat): periodic reconcile"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(var.tags, { Component = "scheduler" })
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "scheduler"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

# ---------------------------------------------------------------------------------------
# ECS task execution roles (one per task family)
# ---------------------------------------------------------------------------------------

data "aws_iam_policy_document" "exec" {
  for_each = local.exec_roles

  statement {
    sid       = "EcrLogin" # no resource-level permissions exist for this
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullImage"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [var.repository_arns[each.value.repository]]
  }
  statement {
    sid       = "WriteLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${var.log_group_arns[each.value.log_group]}:log-stream:*"]
  }
  dynamic "statement" {
    for_each = each.value.secret ? [1] : []
    content {
      sid       = "ReadSecrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = var.secret_arns
    }
  }
  dynamic "statement" {
    for_each = each.value.secret ? [1] : []
    content {
      sid       = "DecryptSecrets"
      actions   = ["kms:Decrypt"]
      resources = [var.kms_key_arn]
      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role" "exec" {
  for_each           = local.exec_roles
  name               = "${var.name}-${each.key}-exec"
  description        = "ECS agent of pelletseg ${each.key} tasks: image, logs, secret"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = merge(var.tags, { Component = "${each.key}-exec" })
}

resource "aws_iam_role_policy" "exec" {
  for_each = local.exec_roles
  name     = "${each.key}-exec"
  role     = aws_iam_role.exec[each.key].id
  policy   = data.aws_iam_policy_document.exec[each.key].json
}
