output "repository_urls" {
  description = "Repository URL (<account>.dkr.ecr.<region>.amazonaws.com/<name>/<image>) by image."
  value       = { for k, r in aws_ecr_repository.this : k => r.repository_url }
}

output "repository_arns" {
  description = "Repository ARN by image."
  value       = { for k, r in aws_ecr_repository.this : k => r.arn }
}

output "registry_host" {
  description = "Registry host name for docker login."
  value       = split("/", values(aws_ecr_repository.this)[0].repository_url)[0]
}
