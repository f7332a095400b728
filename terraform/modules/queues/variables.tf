variable "name" {
  type        = string
  description = "Queue names start with <name>- (= PELLETSEG_QUEUE_PREFIX): <name>-plan, <name>-rows, <name>-reduce and their -dlq queues."

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,39}$", var.name))
    error_message = "name must be 1-39 letters, digits, '-' or '_' (PELLETSEG_QUEUE_PREFIX allows 40 characters with the trailing '-')."
  }
}

variable "expected_seconds" {
  type        = map(number)
  description = "Expected seconds one message of each queue takes (plan: read header and tile grid; rows: segment one row; reduce: stitch a job). Keys are the queue names of queues/app.py."
  default     = { plan = 300, rows = 60, reduce = 1800 }

  validation {
    condition     = toset(keys(var.expected_seconds)) == toset(["plan", "rows", "reduce"])
    error_message = "expected_seconds must have exactly the keys plan, rows and reduce (queues/app.py QUEUES)."
  }

  validation {
    condition     = alltrue([for s in values(var.expected_seconds) : s > 0])
    error_message = "Every expected_seconds value must be positive."
  }
}

variable "visibility_timeout_factor" {
  type        = number
  description = "Visibility timeout = expected seconds x this factor: how much slower than expected a task may run before SQS hands its message to another worker."
  default     = 3

  validation {
    condition     = var.visibility_timeout_factor >= 1.5
    error_message = "visibility_timeout_factor must be at least 1.5."
  }
}

variable "startup_seconds" {
  type        = number
  description = "Added to every visibility timeout: what a worker may spend before its first message of a job finishes beyond the expected time (copying a multi-GB source to local disk, loading the model) (s)."
  default     = 300

  validation {
    condition     = var.startup_seconds >= 0
    error_message = "startup_seconds must not be negative."
  }
}

variable "max_receive_count" {
  type        = number
  description = "Receives of one message before SQS moves it to its dead-letter queue; set it to PELLETSEG_MAX_ATTEMPTS (worker/deadletter.py redelivers a failing message until SQS dead-letters it after max_attempts receives)."
  default     = 3

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "retention_seconds" {
  type        = number
  description = "Seconds a message is kept in a work queue (60-1209600)."
  default     = 345600
}

variable "dlq_retention_seconds" {
  type        = number
  description = "Seconds a message is kept in a dead-letter queue (60-1209600); the maximum, 14 days, leaves time to inspect it."
  default     = 1209600
}

variable "kms_key_arn" {
  type        = string
  description = "ARN of the KMS key for server-side encryption of every queue."
}

variable "alarm_actions" {
  type        = list(string)
  description = "ARNs (e.g. SNS topics) notified when a dead-letter queue receives messages."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
