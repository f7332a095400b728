# SQS queues plan, rows and reduce (queues/app.py QUEUES), each with a dead-letter queue
# and a redrive policy, SSE-KMS, TLS-only access, and a visibility timeout derived from the
# time one message of that queue is expected to take.
#
# Names follow queues/app.py and queues/deadletters.py with PELLETSEG_QUEUE_PREFIX =
# "<name>-": <name>-rows, its dead-letter queue <name>-rows-dlq. Celery (kombu) uses them
# through PELLETSEG_BROKER_TRANSPORT_OPTIONS.predefined_queues and never creates them, so the
# visibility timeout and maxReceiveCount set here are the ones in force.

locals {
  prefix = "${var.name}-"
  # Visibility timeout = expected seconds x factor + start-up allowance (the first message
  # of a job on a worker also copies the source image and loads the model), within SQS's
  # 0..43200 s. A message of a worker that died reappears after it.
  visibility = {
    for q, seconds in var.expected_seconds :
    q => min(43200, ceil(seconds * var.visibility_timeout_factor + var.startup_seconds))
  }
}

resource "aws_sqs_queue" "dlq" {
  for_each                          = var.expected_seconds
  name                              = "${local.prefix}${each.key}-dlq"
  message_retention_seconds         = var.dlq_retention_seconds
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = merge(var.tags, { Queue = each.key, Role = "dead-letter" })
}

resource "aws_sqs_queue" "main" {
  for_each                          = var.expected_seconds
  name                              = "${local.prefix}${each.key}"
  visibility_timeout_seconds        = local.visibility[each.key]
  message_retention_seconds         = var.retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = 300
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq[each.key].arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = merge(var.tags, { Queue = each.key, Role = "work" })
}

# Only the matching work queue may move messages into each dead-letter queue.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  for_each  = var.expected_seconds
  queue_url = aws_sqs_queue.dlq[each.key].id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.main[each.key].arn]
  })
}

data "aws_iam_policy_document" "tls_only" {
  for_each = merge(
    { for q, r in aws_sqs_queue.main : q => r.arn },
    { for q, r in aws_sqs_queue.dlq : "${q}-dlq" => r.arn },
  )
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "main" {
  for_each  = aws_sqs_queue.main
  queue_url = each.value.id
  policy    = data.aws_iam_policy_document.tls_only[each.key].json
}

resource "aws_sqs_queue_policy" "dlq" {
  for_each  = aws_sqs_queue.dlq
  queue_url = each.value.id
  policy    = data.aws_iam_policy_document.tls_only["${each.key}-dlq"].json
}

# A message in a dead-letter queue means a task failed max_receive_count times: alarm.
resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  for_each            = aws_sqs_queue.dlq
  alarm_name          = "${each.value.name}-not-empty"
  alarm_description   = "Messages of queue ${each.key} reached its dead-letter queue: see the job's error in the job table, fix, then resume the job."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}
