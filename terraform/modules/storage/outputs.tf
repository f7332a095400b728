output "bucket_name" {
  description = "Name of the data bucket."
  value       = aws_s3_bucket.data.id
}

output "bucket_arn" {
  description = "ARN of the data bucket."
  value       = aws_s3_bucket.data.arn
}

output "prefix" {
  description = "Key prefix of the store inside the bucket ('' for the root)."
  value       = var.prefix
}

output "storage_url" {
  description = "Value of PELLETSEG_STORAGE_URL: s3://<bucket>[/<prefix>]."
  value       = var.prefix == "" ? "s3://${aws_s3_bucket.data.id}" : "s3://${aws_s3_bucket.data.id}/${var.prefix}"
}

output "log_bucket_name" {
  description = "Name of the access-log bucket (S3 server access logs, ALB access logs)."
  value       = aws_s3_bucket.logs.id
}

output "alb_log_prefix" {
  description = "Key prefix under which the load balancer writes its access logs."
  value       = local.alb_log_prefix
}

output "row_checkpoint_tag" {
  description = "Object tag (key, value) that puts a row checkpoint under the row-checkpoints lifecycle rule."
  value       = local.row_checkpoint
}
