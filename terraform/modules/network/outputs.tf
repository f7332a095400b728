output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 range of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "IDs of the public subnets (load balancer, NAT gateways)."
  value       = aws_subnet.public[*].id
}

output "private_subnet_ids" {
  description = "IDs of the private subnets (API tasks, workers, database)."
  value       = aws_subnet.private[*].id
}

output "s3_endpoint_id" {
  description = "ID of the S3 gateway endpoint of the private route tables."
  value       = aws_vpc_endpoint.s3.id
}
