output "task_role_arns" {
  description = "ECS task role ARN by component (api, cpu-worker, scheduler)."
  value = {
    api          = aws_iam_role.api.arn
    "cpu-worker" = aws_iam_role.cpu_worker.arn
    scheduler    = aws_iam_role.scheduler.arn
  }
}

output "execution_role_arns" {
  description = "ECS task execution role ARN by task family (api, migrate, cpu-worker, scheduler)."
  value       = { for k, r in aws_iam_role.exec : k => r.arn }
}

output "gpu_worker_role_arn" {
  description = "ARN of the GPU worker instance role."
  value       = aws_iam_role.gpu_worker.arn
}

output "gpu_worker_instance_profile_name" {
  description = "Name of the GPU worker instance profile."
  value       = aws_iam_instance_profile.gpu_worker.name
}

output "gpu_worker_instance_profile_arn" {
  description = "ARN of the GPU worker instance profile."
  value       = aws_iam_instance_profile.gpu_worker.arn
}

output "flow_logs_role_arn" {
  description = "ARN of the role VPC Flow Logs assumes."
  value       = aws_iam_role.flow_logs.arn
}
