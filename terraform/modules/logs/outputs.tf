output "group_names" {
  description = "Log group name by component."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}

output "group_arns" {
  description = "Log group ARN by component."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.arn }
}
