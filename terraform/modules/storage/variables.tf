variable "bucket_name" {
  type        = string
  description = "Globally unique name of the data bucket; the access-log bucket is <bucket_name>-logs."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,56}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-58 characters of a-z, 0-9, '.' and '-' (58 leaves room for '-logs')."
  }
}

variable "prefix" {
  type        = string
  description = "Key prefix of pelletseg's store inside the bucket (PELLETSEG_STORAGE_URL = s3://<bucket>/<prefix>); empty for the bucket root."
  default     = "pelletseg"

  validation {
    condition     = var.prefix == "" || can(regex("^[a-z0-9][a-z0-9/_-]*[a-z0-9]$", var.prefix))
    error_message = "prefix must be empty or a relative key prefix without leading or trailing '/'."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "ARN of the KMS key that encrypts every object of the data bucket (SSE-KMS)."
}

variable "cors_allowed_origins" {
  type        = list(string)
  description = "Origins (https://host[:port]) of web pages allowed to PUT presigned uploads and GET results."

  validation {
    condition     = length(var.cors_allowed_origins) > 0 && alltrue([for o in var.cors_allowed_origins : can(regex("^https://[^*/]+$", o))])
    error_message = "cors_allowed_origins must list https:// origins without paths or wildcards."
  }
}

variable "upload_expiration_days" {
  type        = number
  description = "Days after which uploaded source images under uploads/ are deleted."
  default     = 30

  validation {
    condition     = var.upload_expiration_days >= 1
    error_message = "upload_expiration_days must be at least 1."
  }
}

variable "row_checkpoint_expiration_days" {
  type        = number
  description = "Days after which row checkpoints (jobs/{id}/rows/*.tif, tagged as such) are deleted; a failed job can no longer resume its done rows after that."
  default     = 30

  validation {
    condition     = var.row_checkpoint_expiration_days >= 1
    error_message = "row_checkpoint_expiration_days must be at least 1."
  }
}

variable "row_checkpoint_tag_key" {
  type        = string
  description = "Object tag key that marks a row checkpoint for the row-checkpoints lifecycle rule."
  default     = "pelletseg-object"
}

variable "row_checkpoint_tag_value" {
  type        = string
  description = "Object tag value that marks a row checkpoint for the row-checkpoints lifecycle rule."
  default     = "row-checkpoint"
}

variable "outputs_infrequent_access_days" {
  type        = number
  description = "Days after which job outputs move to STANDARD_IA (at least 30, an S3 rule)."
  default     = 90

  validation {
    condition     = var.outputs_infrequent_access_days >= 30
    error_message = "outputs_infrequent_access_days must be at least 30 (S3 minimum for STANDARD_IA)."
  }
}

variable "noncurrent_version_days" {
  type        = number
  description = "Days a noncurrent object version (overwritten or deleted) is kept before it is removed."
  default     = 7

  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "abort_multipart_days" {
  type        = number
  description = "Days after which an unfinished multipart upload is aborted and its parts deleted."
  default     = 3

  validation {
    condition     = var.abort_multipart_days >= 1
    error_message = "abort_multipart_days must be at least 1."
  }
}

variable "access_log_expiration_days" {
  type        = number
  description = "Days S3 and ALB access logs are kept."
  default     = 365

  validation {
    condition     = var.access_log_expiration_days >= 1
    error_message = "access_log_expiration_days must be at least 1."
  }
}

variable "force_destroy" {
  type        = bool
  description = "Allow terraform destroy to delete non-empty buckets (test environments only)."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
