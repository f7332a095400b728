output "security_group_id" {
  description = "Security group of the CPU worker, scheduler and migrate tasks."
  value       = aws_security_group.tasks.id
}

output "worker_service_name" {
  description = "Name of the CPU worker ECS service."
  value       = aws_ecs_service.worker.name
}

output "scheduler_service_name" {
  description = "Name of the scheduler (celery beat) ECS service."
  value       = aws_ecs_service.scheduler.name
}

output "migrate_task_definition_arn" {
  description = "ARN of the one-off migrate task definition."
  value       = aws_ecs_task_definition.migrate.arn
}

output "migrate_task_family" {
  description = "Family of the one-off migrate task definition."
  value       = aws_ecs_task_definition.migrate.family
}
