variable "name" {
  type        = string
  description = "Name prefix of the CPU workers' resources."
}

variable "region" {
  type        = string
  description = "AWS region (for the awslogs driver)."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the tasks."
}

variable "vpc_cidr_block" {
  type        = string
  description = "IPv4 range of the VPC (tasks may reach the database on 5432 inside it)."
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets of the tasks."
}

variable "egress_ports" {
  type        = list(number)
  description = "TCP ports the tasks may open to any address: AWS API endpoints (443), external sources and webhooks."
  default     = [443, 80]
}

variable "cluster_arn" {
  type        = string
  description = "ECS cluster ARN."
}

variable "cluster_name" {
  type        = string
  description = "ECS cluster name (autoscaling resource id and Container Insights dimension)."
}

variable "worker_image" {
  type        = string
  description = "CPU worker image (<ECR repository URL>:<tag>) built from deploy/Dockerfile.worker-cpu (no torch: plan, reduce, the scheduler)."
}

variable "api_image" {
  type        = string
  description = "API image (<ECR repository URL>:<tag>), used by the one-off migrate task."
}

variable "cpu" {
  type        = number
  description = "Fargate CPU units per worker task (4096 = 4 vCPU)."
  default     = 4096
}

variable "memory" {
  type        = number
  description = "Memory per worker task (MiB); the reducer streams, but conversion of a non-tiled source holds strips in memory."
  default     = 16384
}

variable "ephemeral_storage_gib" {
  type        = number
  description = "Task scratch disk (GiB, 21-200): sources are copied here once per job, outputs are staged here."
  default     = 100

  validation {
    condition     = var.ephemeral_storage_gib >= 21 && var.ephemeral_storage_gib <= 200
    error_message = "ephemeral_storage_gib must be between 21 and 200 (Fargate limits)."
  }
}

variable "min_count" {
  type        = number
  description = "Minimum CPU worker tasks; at least one keeps planning latency low (the GPU fleet is what scales to zero)."
  default     = 1

  validation {
    condition     = var.min_count >= 1
    error_message = "min_count must be at least 1."
  }
}

variable "max_count" {
  type        = number
  description = "Maximum CPU worker tasks."
  default     = 10
}

variable "on_demand_base_count" {
  type        = number
  description = "Tasks always placed on regular Fargate before any Fargate Spot is used."
  default     = 0
}

variable "spot" {
  type        = bool
  description = "Place tasks above the on-demand base on Fargate Spot (interruptions are harmless: tasks are idempotent)."
  default     = true
}

variable "backlog_per_task" {
  type        = number
  description = "Target visible plan+reduce messages per running CPU worker task; with stream_reduce, reduce_concurrency - 1 in-flight reduce messages (stitchers) count as this many."
  default     = 2
}

variable "queues" {
  type        = list(string)
  description = "Broker names of the queues the CPU workers consume (plan and reduce, PELLETSEG_QUEUE_PREFIX included)."

  validation {
    condition     = length(var.queues) > 0
    error_message = "queues must name at least one queue."
  }
}

variable "queue_names" {
  type        = map(string)
  description = "SQS queue name by pelletseg queue name (plan, rows, reduce)."
}

variable "task_role_arns" {
  type        = map(string)
  description = "ECS task role ARN by component; needs cpu-worker and scheduler."
}

variable "execution_role_arns" {
  type        = map(string)
  description = "ECS execution role ARN by task family; needs cpu-worker, scheduler and migrate."
}

variable "environment" {
  type        = map(string)
  description = "Plain environment of the containers: PELLETSEG_* settings (core/settings.py)."
}

variable "secrets" {
  type        = map(string)
  description = "Environment variables read from Secrets Manager at start: name -> secret ARN."
}

variable "log_group_names" {
  type        = map(string)
  description = "CloudWatch log group name by component; needs cpu-worker, scheduler and migrate."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}

variable "stream_reduce" {
  type        = bool
  description = "Streaming stitcher (PELLETSEG_STREAM_REDUCE, set on the worker from this variable): planning enqueues a pelletseg.stitch task per job on the reduce queue that stitches the label map, overlay and preview while the rows run, holding one reduce slot for the whole job; the worker then runs a threads pool of reduce_concurrency instead of solo, and the scaling counts the slots held. Off by default (unmeasured on a GPU fleet)."
  default     = false
}

variable "reduce_concurrency" {
  type        = number
  description = "Threads pool size of each CPU worker task with stream_reduce (ignored without it: solo). Must exceed the number of jobs expected to run at once: each running job holds one slot with its stitcher, planners and reducers need the rest."
  default     = 4

  validation {
    condition     = var.reduce_concurrency >= 2 && var.reduce_concurrency <= 32 && floor(var.reduce_concurrency) == var.reduce_concurrency
    error_message = "reduce_concurrency must be a whole number from 2 to 32."
  }
}
