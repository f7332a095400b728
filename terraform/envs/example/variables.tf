variable "region" {
  type        = string
  description = "AWS region of the deployment."
  default     = "eu-west-1"
}

variable "project" {
  type        = string
  description = "Project name: first part of every resource name."
  default     = "pelletseg"
}

variable "environment" {
  type        = string
  description = "Environment name (prod, staging, ...): second part of every resource name."
  default     = "example"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,14}$", var.environment))
    error_message = "environment must be 2-15 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "bucket_name" {
  type        = string
  description = "Data bucket name; null derives <project>-<environment>-<account id>-<region>."
  default     = null
}

variable "storage_prefix" {
  type        = string
  description = "Key prefix of pelletseg's store inside the bucket (PELLETSEG_STORAGE_URL = s3://<bucket>/<prefix>)."
  default     = "pelletseg"
}

variable "extra_source_bucket_arns" {
  type        = list(string)
  description = "Other buckets (ARNs) that workers may read job sources from, read-only."
  default     = []
}

variable "cors_allowed_origins" {
  type        = list(string)
  description = "https:// origins of web pages that upload to presigned URLs (the dashboard's own origin included)."
}

variable "certificate_arn" {
  type        = string
  description = "ACM certificate for the API's HTTPS listener (request or import it first; see deploy/README.md)."
}

variable "api_allowed_cidrs" {
  type        = list(string)
  description = "IPv4 ranges allowed to reach the API over HTTPS."
  default     = ["0.0.0.0/0"]
}

variable "metrics_allowed_cidrs" {
  type        = list(string)
  description = "IPv4 ranges of Prometheus scrapers that may read /metrics through the load balancer (at most 4); empty hides /metrics."
  default     = []
}

variable "api_image_tag" {
  type        = string
  description = "Tag of the API image pushed to the api ECR repository."
}

variable "worker_image_tag" {
  type        = string
  description = "Tag of the worker images pushed to the worker and worker-cpu ECR repositories (built from one commit: deploy/Dockerfile.worker and deploy/Dockerfile.worker-cpu)."
}

variable "gpu_ami_id" {
  type        = string
  description = "GPU AMI of the workers: NVIDIA driver, Docker, NVIDIA container toolkit, AWS CLI (AWS Deep Learning Base OSS NVIDIA Driver GPU AMI)."
}

variable "gpu_instance_types" {
  type        = list(string)
  description = "GPU instance types of the spot fleet."
  default     = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge", "g5.2xlarge", "g6.2xlarge", "g4dn.2xlarge"]
}

variable "gpu_max_instances" {
  type        = number
  description = "Most GPU worker instances at once."
  default     = 20
}

variable "expected_row_seconds" {
  type        = number
  description = "Expected seconds one GPU worker takes for one rows message (PELLETSEG_ROWS_PER_TASK tile rows) running it alone (one row in flight); sets the rows visibility timeout (x gpu_rows_in_flight) and the scaling target."
  default     = 30

  validation {
    condition     = var.expected_row_seconds > 0
    error_message = "expected_row_seconds must be positive."
  }
}

variable "expected_plan_seconds" {
  type        = number
  description = "Expected seconds of one plan task (header, tile grid; longer when a non-tiled source is converted)."
  default     = 300
}

variable "expected_reduce_seconds" {
  type        = number
  description = "Expected seconds of one reduce task (stitching a pyramidal label map and overlay)."
  default     = 1800
}

variable "visibility_timeout_factor" {
  type        = number
  description = "Queue visibility timeout = expected seconds x this factor."
  default     = 3
}

variable "acceptable_row_wait_seconds" {
  type        = number
  description = "How long a row may wait in the queue; backlog per GPU instance target = this / expected_row_seconds."
  default     = 600
}

variable "max_attempts" {
  type        = number
  description = "PELLETSEG_MAX_ATTEMPTS and every queue's maxReceiveCount: attempts per row (and receives per message) before the row, its job and the message fail (dead-letter queue)."
  default     = 3

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 20
    error_message = "max_attempts must be between 1 and 20."
  }
}

variable "retention_days" {
  type        = number
  description = "PELLETSEG_RETENTION_DAYS: jobs that ended longer ago than this (days) are deleted by the workers' reconcile pass (outputs and row checkpoints leave the bucket, the job row stays as 'deleted'); null keeps every job until deleted through the API."
  default     = null

  validation {
    condition     = var.retention_days == null ? true : var.retention_days > 0
    error_message = "retention_days must be above 0, or null to keep jobs."
  }
}

variable "startup_seconds" {
  type        = number
  description = "Added to each queue's visibility timeout: a worker's first message of a job also copies the source image and loads the model (s)."
  default     = 300
}

variable "gpu_rows_in_flight" {
  type        = number
  description = "Rows each GPU worker runs at once (PELLETSEG_ROWS_IN_FLIGHT, Celery threads pool of that size): one model, forward passes take turns, reads and checkpoint writes of the other rows overlap the GPU; 2-3 on a GPU. Multiplies the rows visibility timeout: a row shares the GPU with the others."
  default     = 2

  validation {
    condition     = var.gpu_rows_in_flight >= 1 && var.gpu_rows_in_flight <= 8 && floor(var.gpu_rows_in_flight) == var.gpu_rows_in_flight
    error_message = "gpu_rows_in_flight must be a whole number from 1 to 8."
  }
}

variable "stream_reduce" {
  type        = bool
  description = "Streaming stitcher (PELLETSEG_STREAM_REDUCE of the CPU workers): planning enqueues a pelletseg.stitch task per job on the reduce queue that stitches the label map, overlay and preview while the rows run, so the reducer only adds the fractions; it holds one CPU worker slot for the whole job, so the CPU workers then run a threads pool of reduce_concurrency instead of solo. Off by default: unmeasured on a GPU fleet (docs/deployment.md, Streaming stitcher)."
  default     = false
}

variable "reduce_concurrency" {
  type        = number
  description = "Threads pool size of each CPU worker task with stream_reduce (ignored without it). Must exceed the number of jobs expected to run at once: each running job holds one slot with its stitcher, planners and reducers need the rest."
  default     = 4

  validation {
    condition     = var.reduce_concurrency >= 2 && var.reduce_concurrency <= 32 && floor(var.reduce_concurrency) == var.reduce_concurrency
    error_message = "reduce_concurrency must be a whole number from 2 to 32."
  }
}

variable "gpu_spot_mode" {
  type        = string
  description = "PELLETSEG_SPOT_MODE of GPU workers on a spot interruption notice: release (hand the running rows back at once), finish (let them finish) or off."
  default     = "release"

  validation {
    condition     = contains(["off", "finish", "release"], var.gpu_spot_mode)
    error_message = "gpu_spot_mode must be off, finish or release."
  }
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class of the job table."
  default     = "db.t4g.medium"
}

variable "db_multi_az" {
  type        = bool
  description = "Multi-AZ standby for the job table."
  default     = true
}

variable "db_password_version" {
  type        = number
  description = "Raise by one to rotate the database password and the URL secret together."
  default     = 1
}

variable "protect_from_destroy" {
  type        = bool
  description = "Deletion protection on the database and load balancer, final DB snapshot, no force-delete of buckets/repositories, recoverable secret. false only for throw-away environments."
  default     = true
}

variable "alarm_actions" {
  type        = list(string)
  description = "ARNs (SNS topics) notified when a dead-letter queue receives messages."
  default     = []
}

variable "log_retention_days" {
  type        = number
  description = "Days CloudWatch keeps component logs."
  default     = 365
}
