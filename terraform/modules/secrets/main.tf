# Application secrets generated at apply time: the HMAC key that signs webhook bodies
# (PELLETSEG_WEBHOOK_SECRET). The value is ephemeral in Terraform (write-only argument: never
# in the state or plan) and read by the containers from Secrets Manager at start.

ephemeral "aws_secretsmanager_random_password" "webhook" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "webhook" {
  #checkov:skip=CKV2_AWS_57:Receivers verify signatures with this key, so it changes only when they are told: rotate by raising webhook_secret_version and sharing the new key (deploy/README.md), not with a rotation Lambda.
  name                    = "${var.name}/webhook-secret"
  description             = "PELLETSEG_WEBHOOK_SECRET: HMAC-SHA256 key of pelletseg webhook signatures"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "webhook" {
  secret_id                = aws_secretsmanager_secret.webhook.id
  secret_string_wo         = ephemeral.aws_secretsmanager_random_password.webhook.random_password
  secret_string_wo_version = var.webhook_secret_version
}
