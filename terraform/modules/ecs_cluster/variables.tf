variable "name" {
  type        = string
  description = "Name of the ECS cluster."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting ECS Exec sessions."
}

variable "exec_log_group_name" {
  type        = string
  description = "CloudWatch log group receiving ECS Exec session transcripts."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
