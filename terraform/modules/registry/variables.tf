variable "name" {
  type        = string
  description = "Name prefix: repositories are <name>/<image>."
}

variable "repositories" {
  type        = list(string)
  description = "Images to host (deploy/Dockerfile.<image>)."
  default     = ["api", "worker", "worker-cpu"]
}

variable "kms_key_arn" {
  type        = string
  description = "KMS key encrypting the images."
}

variable "keep_images" {
  type        = number
  description = "Tagged images kept per repository (older ones expire)."
  default     = 30

  validation {
    condition     = var.keep_images >= 2
    error_message = "keep_images must be at least 2 (the running image and one to roll back to)."
  }
}

variable "force_delete" {
  type        = bool
  description = "Allow terraform destroy to delete repositories that still hold images (test environments only)."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
