variable "name" {
  type        = string
  description = "Name prefix (the instance is <name>-jobs, the secret <name>/database-url)."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the database security group."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets (at least two AZs) of the DB subnet group."

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "client_security_group_ids" {
  type        = map(string)
  description = "Security groups allowed to connect on 5432, by component name (api, cpu-workers, gpu-workers)."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting storage, Performance Insights and the URL secret."
}

variable "engine_major_version" {
  type        = string
  description = "PostgreSQL major version (selects the parameter group family postgres<N>)."
  default     = "16"
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL engine version; a major version lets RDS pick and upgrade the minor one."
  default     = "16"
}

variable "instance_class" {
  type        = string
  description = "RDS instance class; the job table is small (one row per tile row), db.t4g.medium is ample for hundreds of workers."
  default     = "db.t4g.medium"
}

variable "database_name" {
  type        = string
  description = "Name of the database holding the job table."
  default     = "pelletseg"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be a lowercase PostgreSQL identifier."
  }
}

variable "username" {
  type        = string
  description = "Master user name of the database."
  default     = "pelletseg"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.username)) && var.username != "postgres"
    error_message = "username must be a lowercase identifier other than the reserved 'postgres'."
  }
}

variable "password_version" {
  type        = number
  description = "Raise by one to generate a new master password and rewrite the URL secret in the same apply."
  default     = 1
}

variable "allocated_storage_gib" {
  type        = number
  description = "Initial storage (GiB)."
  default     = 50
}

variable "max_allocated_storage_gib" {
  type        = number
  description = "Storage autoscaling ceiling (GiB)."
  default     = 500
}

variable "multi_az" {
  type        = bool
  description = "Keep a synchronous standby in a second AZ (failover in about a minute)."
  default     = true
}

variable "backup_retention_days" {
  type        = number
  description = "Days of automated backups and point-in-time recovery (7-35)."
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse to delete the instance (set false, apply, then destroy to remove it on purpose)."
  default     = true
}

variable "skip_final_snapshot" {
  type        = bool
  description = "Delete without a final snapshot (test environments only)."
  default     = false
}

variable "log_min_duration_ms" {
  type        = number
  description = "Statements slower than this (ms) are logged to CloudWatch Logs."
  default     = 1000
}

variable "secret_recovery_window_days" {
  type        = number
  description = "Days a deleted URL secret can be restored (0 deletes at once: test environments only)."
  default     = 7
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
