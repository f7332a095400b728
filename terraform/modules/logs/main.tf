# CloudWatch log groups of every component, encrypted with the project key and kept for a
# bounded time. Names start with the project name, which the key policy relies on.

resource "aws_cloudwatch_log_group" "this" {
  for_each          = toset(var.components)
  name              = "${var.name}/${each.key}"
  retention_in_days = var.retention_days
  kms_key_id        = var.kms_key_arn
  tags              = merge(var.tags, { Component = each.key })
}
