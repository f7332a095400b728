output "asg_name" {
  description = "Name of the GPU worker autoscaling group."
  value       = aws_autoscaling_group.this.name
}

output "launch_template_id" {
  description = "ID of the GPU worker launch template."
  value       = aws_launch_template.this.id
}

output "security_group_id" {
  description = "Security group of the GPU workers."
  value       = aws_security_group.this.id
}
