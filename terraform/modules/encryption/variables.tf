variable "name" {
  type        = string
  description = "Name prefix (alias/<name>); log groups encrypted with the key must be named <name>* or aws-waf-logs-<name>*."
}

variable "deletion_window_days" {
  type        = number
  description = "Days a scheduled key deletion waits (7-30) before the key and all data under it are gone."
  default     = 30

  validation {
    condition     = var.deletion_window_days >= 7 && var.deletion_window_days <= 30
    error_message = "deletion_window_days must be between 7 and 30."
  }
}

variable "rotation_period_days" {
  type        = number
  description = "Days between automatic rotations of the key material (90-2560)."
  default     = 365

  validation {
    condition     = var.rotation_period_days >= 90 && var.rotation_period_days <= 2560
    error_message = "rotation_period_days must be between 90 and 2560."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
