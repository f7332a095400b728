variable "name" {
  type        = string
  description = "Name prefix: log groups are <name>/<component>."
}

variable "components" {
  type        = list(string)
  description = "Components that get a log group (api, cpu-worker, gpu-worker, scheduler, migrate, ecs-exec, vpc-flow-logs)."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting the log groups (its policy must admit CloudWatch Logs for <name>*)."
}

variable "retention_days" {
  type        = number
  description = "Days log events are kept (a CloudWatch retention value, e.g. 30, 90, 365)."
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.retention_days)
    error_message = "retention_days must be one of CloudWatch's retention values."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
