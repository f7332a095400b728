output "api_url" {
  description = "HTTPS URL of the API load balancer (use your certificate's domain, pointed at api_dns_name, for TLS to verify)."
  value       = module.api.url
}

output "api_dns_name" {
  description = "DNS name of the API load balancer: target of the CNAME/alias record of your domain."
  value       = module.api.dns_name
}

output "bucket" {
  description = "Data bucket."
  value       = module.storage.bucket_name
}

output "storage_url" {
  description = "PELLETSEG_STORAGE_URL of this deployment."
  value       = module.storage.storage_url
}

output "queue_urls" {
  description = "SQS URL of each work queue (plan, rows, reduce)."
  value       = module.queues.queue_urls
}

output "dead_letter_queue_urls" {
  description = "SQS URL of each dead-letter queue."
  value       = module.queues.dlq_urls
}

output "queue_visibility_timeouts" {
  description = "Visibility timeout (s) of each work queue, derived from the expected_*_seconds variables (rows: x gpu_rows_in_flight)."
  value       = module.queues.visibility_timeouts
}

output "database_endpoint" {
  description = "Host:port of the PostgreSQL job table (private subnets only)."
  value       = module.database.endpoint
}

output "database_url_secret_arn" {
  description = "Secrets Manager secret holding PELLETSEG_DATABASE_URL."
  value       = module.database.url_secret_arn
}

output "ecr_repository_urls" {
  description = "ECR repository of each image (api, worker, worker-cpu): docker push targets."
  value       = module.registry.repository_urls
}

output "ecs_cluster" {
  description = "ECS cluster of the API, CPU workers, scheduler and migrate task."
  value       = module.ecs_cluster.cluster_name
}

output "gpu_autoscaling_group" {
  description = "Autoscaling group of the GPU workers."
  value       = module.gpu_workers.asg_name
}

output "cli_environment" {
  description = "PELLETSEG_* settings for a `pelletseg` CLI or worker with AWS credentials (add PELLETSEG_DATABASE_URL from the secret)."
  value = {
    PELLETSEG_BROKER_URL               = local.common_environment.PELLETSEG_BROKER_URL
    PELLETSEG_BROKER_TRANSPORT_OPTIONS = local.common_environment.PELLETSEG_BROKER_TRANSPORT_OPTIONS
    PELLETSEG_STORAGE_URL              = local.common_environment.PELLETSEG_STORAGE_URL
  }
}

output "migrate_command" {
  description = "AWS CLI command that runs `pelletseg migrate` once as an ECS task (append --overrides to run `pelletseg apikey ...`)."
  value = join(" ", [
    "aws ecs run-task --region ${var.region} --cluster ${module.ecs_cluster.cluster_name}",
    "--launch-type FARGATE --task-definition ${module.cpu_workers.migrate_task_family}",
    "--network-configuration 'awsvpcConfiguration={subnets=[${join(",", module.network.private_subnet_ids)}],securityGroups=[${module.cpu_workers.security_group_id}],assignPublicIp=DISABLED}'",
  ])
}
