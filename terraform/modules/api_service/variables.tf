variable "name" {
  type        = string
  description = "Name prefix of the API's resources."
}

variable "region" {
  type        = string
  description = "AWS region (for the awslogs driver)."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the load balancer and the tasks."
}

variable "vpc_cidr_block" {
  type        = string
  description = "IPv4 range of the VPC (tasks may reach the database on 5432 inside it)."
}

variable "public_subnet_ids" {
  type        = list(string)
  description = "Subnets of an internet-facing load balancer."
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Subnets of the API tasks (and of an internal load balancer)."
}

variable "internal" {
  type        = bool
  description = "Make the load balancer internal (reachable only inside the VPC or over a VPN/peering)."
  default     = false
}

variable "allowed_cidrs" {
  type        = list(string)
  description = "IPv4 ranges allowed to reach the API over HTTPS (a lab's egress range, or 0.0.0.0/0 with API keys and the WAF as protection)."
}

variable "metrics_allowed_cidrs" {
  type        = list(string)
  description = "IPv4 ranges (at most 4, an ALB limit) of Prometheus scrapers allowed to read /metrics through the load balancer; others get 404."
  default     = []

  validation {
    condition     = length(var.metrics_allowed_cidrs) <= 4
    error_message = "metrics_allowed_cidrs can hold at most 4 ranges (ALB condition value limit)."
  }
}

variable "egress_ports" {
  type        = list(number)
  description = "TCP ports API tasks may open to any address: AWS API endpoints (443) and job webhooks."
  default     = [443, 80]
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate ARN for the HTTPS listener (its domain points at the load balancer)."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to delete the load balancer."
  default     = true
}

variable "access_log_bucket" {
  type        = string
  description = "S3 bucket (SSE-S3) receiving the load balancer's access logs."
}

variable "access_log_prefix" {
  type        = string
  description = "Key prefix of the access logs in that bucket."
}

variable "waf_rate_limit_per_5min" {
  type        = number
  description = "Requests one client IP may send in 5 minutes before the WAF blocks it."
  default     = 2000
}

variable "log_retention_days" {
  type        = number
  description = "Days the WAF log is kept."
  default     = 365
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting the WAF log group."
}

variable "cluster_arn" {
  type        = string
  description = "ECS cluster ARN."
}

variable "cluster_name" {
  type        = string
  description = "ECS cluster name (autoscaling resource id)."
}

variable "image" {
  type        = string
  description = "API image (<ECR repository URL>:<tag>) built from deploy/Dockerfile.api."
}

variable "cpu" {
  type        = number
  description = "Fargate CPU units per API task (1024 = 1 vCPU)."
  default     = 1024
}

variable "memory" {
  type        = number
  description = "Memory per API task (MiB)."
  default     = 2048
}

variable "min_count" {
  type        = number
  description = "Minimum number of API tasks (2 or more for availability)."
  default     = 2
}

variable "max_count" {
  type        = number
  description = "Maximum number of API tasks."
  default     = 6
}

variable "target_cpu_percent" {
  type        = number
  description = "Average CPU utilisation (%) the API service is scaled to."
  default     = 60
}

variable "execution_role_arn" {
  type        = string
  description = "ECS task execution role (image pull, logs, secret)."
}

variable "task_role_arn" {
  type        = string
  description = "ECS task role of the API process."
}

variable "environment" {
  type        = map(string)
  description = "Plain environment of the container: PELLETSEG_* settings (core/settings.py)."
}

variable "secrets" {
  type        = map(string)
  description = "Environment variables read from Secrets Manager at start: name -> secret ARN."
}

variable "log_group_name" {
  type        = string
  description = "CloudWatch log group of the API containers."
}

variable "enable_execute_command" {
  type        = bool
  description = "Allow ECS Exec sessions into API tasks (used to run `pelletseg apikey create`)."
  default     = true
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
