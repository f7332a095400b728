output "queue_urls" {
  description = "URL of each work queue, by pelletseg queue name (plan, rows, reduce)."
  value       = { for q, r in aws_sqs_queue.main : q => r.id }
}

output "queue_arns" {
  description = "ARN of each work queue, by pelletseg queue name."
  value       = { for q, r in aws_sqs_queue.main : q => r.arn }
}

output "queue_names" {
  description = "SQS name (= PELLETSEG_QUEUE_PREFIX + queue) of each work queue, by pelletseg queue name."
  value       = { for q, r in aws_sqs_queue.main : q => r.name }
}

output "dlq_urls" {
  description = "URL of each dead-letter queue, by pelletseg queue name."
  value       = { for q, r in aws_sqs_queue.dlq : q => r.id }
}

output "dlq_arns" {
  description = "ARN of each dead-letter queue, by pelletseg queue name."
  value       = { for q, r in aws_sqs_queue.dlq : q => r.arn }
}

output "visibility_timeouts" {
  description = "Visibility timeout (s) of each work queue, derived from expected_seconds."
  value       = local.visibility
}

output "queue_prefix" {
  description = "PELLETSEG_QUEUE_PREFIX matching these queue names (<name>-)."
  value       = local.prefix
}

output "predefined_queues" {
  description = "kombu's predefined_queues transport option: {SQS queue name: {url}} for plan, rows and reduce."
  value       = { for q, r in aws_sqs_queue.main : r.name => { url = r.id } }
}
