variable "name" {
  type        = string
  description = "Name prefix of every role (<name>-<component>)."
}

variable "bucket_arn" {
  type        = string
  description = "ARN of the data bucket."
}

variable "storage_prefix" {
  type        = string
  description = "Key prefix of the store inside the bucket ('' for the root); every object grant is scoped under it."
}

variable "extra_source_bucket_arns" {
  type        = list(string)
  description = "ARNs of other buckets that job sources (s3://...) may be read from, read-only, by workers."
  default     = []
}

variable "queue_arns" {
  type        = map(string)
  description = "ARN of each work queue by pelletseg queue name (plan, rows, reduce)."

  validation {
    condition     = toset(keys(var.queue_arns)) == toset(["plan", "rows", "reduce"])
    error_message = "queue_arns must have exactly the keys plan, rows and reduce."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "ARN of the project KMS key (S3, SQS, secret, exec sessions)."
}

variable "secret_arns" {
  type        = list(string)
  description = "ARNs of the Secrets Manager secrets the containers read at start (PELLETSEG_DATABASE_URL, PELLETSEG_WEBHOOK_SECRET)."
}

variable "log_group_arns" {
  type        = map(string)
  description = "Log group ARN by component; needs api, migrate, cpu-worker, scheduler, gpu-worker, ecs-exec and vpc-flow-logs."
}

variable "repository_arns" {
  type        = map(string)
  description = "ECR repository ARN by image (api, worker)."
}

variable "gpu_asg_name" {
  type        = string
  description = "Name of the GPU worker autoscaling group (its instances complete their own termination lifecycle hook)."
}

variable "enable_execute_command" {
  type        = bool
  description = "Let operators open ECS Exec sessions in API tasks (used to create API keys)."
  default     = true
}

variable "enable_ssm" {
  type        = bool
  description = "Attach AmazonSSMManagedInstanceCore to GPU workers (Session Manager shell, no SSH)."
  default     = true
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
