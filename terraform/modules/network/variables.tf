variable "name" {
  type        = string
  description = "Name prefix of every network resource (e.g. pelletseg-prod)."
}

variable "cidr_block" {
  type        = string
  description = "IPv4 range of the VPC; /16 recommended (subnets are /20 slices of it)."
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 16
    error_message = "cidr_block must be a valid IPv4 CIDR of /16 or larger."
  }
}

variable "az_count" {
  type        = number
  description = "Number of availability zones to spread subnets over (2 or 3; RDS needs 2)."
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be between 2 and 4."
  }
}

variable "availability_zones" {
  type        = list(string)
  description = "Availability zone names to use (the first az_count that are available); null = <region>a, b, c, d."
  default     = null
}

variable "nat_gateway_per_az" {
  type        = bool
  description = "One NAT gateway per AZ (resilient) instead of one shared NAT gateway (cheaper)."
  default     = false
}

variable "flow_log_group_arn" {
  type        = string
  description = "ARN of the CloudWatch log group receiving VPC flow logs."
}

variable "flow_log_role_arn" {
  type        = string
  description = "ARN of the IAM role that VPC Flow Logs assumes to write to the log group."
}

variable "tags" {
  type        = map(string)
  description = "Tags added to every resource of this module."
  default     = {}
}
