output "webhook_secret_arn" {
  description = "ARN of the secret whose value is PELLETSEG_WEBHOOK_SECRET."
  value       = aws_secretsmanager_secret.webhook.arn
}
