variable "name" {
  type        = string
  description = "Name prefix of the secrets (<name>/webhook-secret)."
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting the secrets."
}

variable "webhook_secret_version" {
  type        = number
  description = "Raise by one to generate a new webhook signing key."
  default     = 1
}

variable "recovery_window_days" {
  type        = number
  description = "Days a deleted secret can be restored (0 deletes at once: test environments only)."
  default     = 7
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
