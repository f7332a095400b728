output "url" {
  description = "HTTPS URL of the load balancer (point your certificate's DNS name at dns_name)."
  value       = "https://${aws_lb.this.dns_name}"
}

output "dns_name" {
  description = "DNS name of the load balancer (CNAME/alias target)."
  value       = aws_lb.this.dns_name
}

output "zone_id" {
  description = "Route 53 zone of the load balancer (for an alias record)."
  value       = aws_lb.this.zone_id
}

output "tasks_security_group_id" {
  description = "Security group of the API tasks."
  value       = aws_security_group.tasks.id
}

output "service_name" {
  description = "Name of the ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN of the API task definition."
  value       = aws_ecs_task_definition.this.arn
}
