variable "name" {
  type        = string
  description = "Name prefix of the GPU workers' resources."
}

variable "name_asg" {
  type        = string
  description = "Name of the autoscaling group (known before apply: the IAM role scopes CompleteLifecycleAction to it)."
}

variable "region" {
  type        = string
  description = "AWS region (AWS CLI calls and the awslogs driver on the instance)."
}

variable "vpc_id" {
  type        = string
  description = "VPC of the workers."
}

variable "vpc_cidr_block" {
  type        = string
  description = "IPv4 range of the VPC (workers reach the database on 5432 inside it)."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets the group launches into (more AZs = more spot pools)."
}

variable "egress_ports" {
  type        = list(number)
  description = "TCP ports workers may open to any address: AWS APIs and the registry (443), sources and webhooks."
  default     = [443, 80]
}

variable "ami_id" {
  type        = string
  description = "GPU AMI with the NVIDIA driver, Docker, the NVIDIA container toolkit and the AWS CLI (e.g. the AWS Deep Learning Base OSS NVIDIA Driver GPU AMI for Amazon Linux 2023)."

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI ID (ami-...)."
  }
}

variable "root_device_name" {
  type        = string
  description = "Root device name of the AMI (/dev/xvda on Amazon Linux, /dev/sda1 on Ubuntu)."
  default     = "/dev/xvda"
}

variable "root_volume_gib" {
  type        = number
  description = "Encrypted gp3 root volume (GiB): the worker image (~10 GB) plus scratch where the instance has no NVMe store."
  default     = 150
}

variable "instance_types" {
  type        = list(string)
  description = "GPU instance types the spot fleet may use; several types (and AZs) make spot capacity far more available."
  default     = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge", "g5.2xlarge", "g6.2xlarge", "g4dn.2xlarge"]

  validation {
    condition     = length(var.instance_types) >= 2 && alltrue([for t in var.instance_types : can(regex("^(g|p)[0-9]", t))])
    error_message = "instance_types must list at least two GPU (g*/p*) instance types."
  }
}

variable "on_demand_base_capacity" {
  type        = number
  description = "Instances always bought on demand (0: all spot)."
  default     = 0
}

variable "on_demand_percentage_above_base" {
  type        = number
  description = "Percentage of instances above the base bought on demand (0: all spot)."
  default     = 0

  validation {
    condition     = var.on_demand_percentage_above_base >= 0 && var.on_demand_percentage_above_base <= 100
    error_message = "on_demand_percentage_above_base must be between 0 and 100."
  }
}

variable "max_size" {
  type        = number
  description = "Most GPU workers at once (your spot vCPU quota for G/P instances bounds this too)."
  default     = 20

  validation {
    condition     = var.max_size >= 1
    error_message = "max_size must be at least 1."
  }
}

variable "backlog_per_instance" {
  type        = number
  description = "Target visible rows messages per in-service instance (acceptable wait / expected row time)."

  validation {
    condition     = var.backlog_per_instance >= 1
    error_message = "backlog_per_instance must be at least 1."
  }
}

variable "instance_warmup_seconds" {
  type        = number
  description = "Seconds from launch until a new instance's worker takes rows (boot, image pull, model load)."
  default     = 300
}

variable "drain_seconds" {
  type        = number
  description = "Seconds a worker gets on scale-in to finish its current rows (warm shutdown) before it is killed."
  default     = 300
}

variable "rows_in_flight" {
  type        = number
  description = "Rows each GPU worker process runs at once (PELLETSEG_ROWS_IN_FLIGHT and Celery's threads pool concurrency): they share one model, forward passes take turns, and one row's reads, checkpoint write and job-table commits overlap another's inference; 2-3 on a GPU."
  default     = 2

  validation {
    condition     = var.rows_in_flight >= 1 && var.rows_in_flight <= 8 && floor(var.rows_in_flight) == var.rows_in_flight
    error_message = "rows_in_flight must be a whole number from 1 to 8."
  }
}

variable "rows_queue_name" {
  type        = string
  description = "SQS name of the rows queue (scaling metric dimension)."
}

variable "instance_profile_arn" {
  type        = string
  description = "Instance profile of the workers (terraform/modules/iam)."
}

variable "image" {
  type        = string
  description = "Worker image (<ECR repository URL>:<tag>) built from deploy/Dockerfile.worker."
}

variable "environment" {
  type        = map(string)
  description = "PELLETSEG_* settings written to the container's env file (core/settings.py); PELLETSEG_ROWS_IN_FLIGHT is set from rows_in_flight."
}

variable "secrets" {
  type        = map(string)
  description = "Environment variables read from Secrets Manager at boot: name -> secret ARN (PELLETSEG_DATABASE_URL, PELLETSEG_WEBHOOK_SECRET)."
}

variable "queues" {
  type        = list(string)
  description = "Broker names of the queues the workers consume (the rows queue, PELLETSEG_QUEUE_PREFIX included)."

  validation {
    condition     = length(var.queues) > 0
    error_message = "queues must name at least one queue."
  }
}

variable "log_group_name" {
  type        = string
  description = "CloudWatch log group of the worker containers."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
