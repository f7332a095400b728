output "endpoint" {
  description = "Host:port of the database."
  value       = aws_db_instance.this.endpoint
}

output "address" {
  description = "Host name of the database."
  value       = aws_db_instance.this.address
}

output "database_name" {
  description = "Database holding the job table."
  value       = var.database_name
}

output "url_secret_arn" {
  description = "ARN of the Secrets Manager secret whose value is PELLETSEG_DATABASE_URL."
  value       = aws_secretsmanager_secret.database_url.arn
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.db.id
}
