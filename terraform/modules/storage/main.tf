# The blob store (PELLETSEG_STORAGE_URL = s3://<bucket>/<prefix>) and the access-log bucket.
#
# Layout under the prefix (storage/blobs/layout.py): uploads/{job}/..., jobs/{job}/rows/{r:05d}.tif
# (row checkpoints), jobs/{job}/labels.tif and the other outputs, models/{name}/{version}/.
# Private (public access blocked, owner-enforced), SSE-KMS with a bucket key, versioned,
# TLS-only, CORS for presigned browser uploads, lifecycle rules for uploads and checkpoints.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_elb_service_account" "current" {}
data "aws_partition" "current" {}

locals {
  p                = var.prefix == "" ? "" : "${var.prefix}/"
  log_bucket_name  = "${var.bucket_name}-logs"
  alb_log_prefix   = "alb"
  s3_log_prefix    = "s3/${var.bucket_name}/"
  uploads_prefix   = "${local.p}uploads/"
  jobs_prefix      = "${local.p}jobs/"
  row_checkpoint   = { key = var.row_checkpoint_tag_key, value = var.row_checkpoint_tag_value }
  account_id       = data.aws_caller_identity.current.account_id
  alb_log_resource = "${aws_s3_bucket.logs.arn}/${local.alb_log_prefix}/AWSLogs/${local.account_id}/*"
}

# ---------------------------------------------------------------------------------------
# Data bucket
# ---------------------------------------------------------------------------------------

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles storage cost; job outputs are recomputable from uploads. Add replication in the env where compliance requires it.
  #checkov:skip=CKV2_AWS_62:Nothing consumes S3 events: jobs are submitted through the API, which enqueues work itself.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Name = var.bucket_name })
}

resource "aws_s3_bucket_ownership_controls" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  bucket                  = aws_s3_bucket.data.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  bucket = aws_s3_bucket.data.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "data" {
  bucket        = aws_s3_bucket.data.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = local.s3_log_prefix
}

# Browsers PUT (and multipart-upload parts) straight to presigned URLs; the ETag header must
# be readable to complete a multipart upload.
resource "aws_s3_bucket_cors_configuration" "data" {
  bucket = aws_s3_bucket.data.id
  cors_rule {
    allowed_methods = ["PUT", "GET", "HEAD"]
    allowed_origins = var.cors_allowed_origins
    allowed_headers = ["content-type", "content-md5", "x-amz-checksum-sha256", "x-amz-checksum-crc32", "x-amz-content-sha256", "x-amz-date", "authorization"]
    expose_headers  = ["ETag", "x-amz-version-id"]
    max_age_seconds = 3600
  }
}

# S3 lifecycle filters match a literal prefix and/or object tags, never a wildcard such as
# jobs/*/rows/: row checkpoints are therefore selected by the jobs/ prefix AND the tag
# <row_checkpoint_tag_key>=<row_checkpoint_tag_value> that the worker sets on them.
resource "aws_s3_bucket_lifecycle_configuration" "data" {
  bucket     = aws_s3_bucket.data.id
  depends_on = [aws_s3_bucket_versioning.data]

  rule {
    id     = "uploads"
    status = "Enabled"
    filter {
      prefix = local.uploads_prefix
    }
    expiration {
      days = var.upload_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_multipart_days
    }
  }

  rule {
    id     = "row-checkpoints"
    status = "Enabled"
    filter {
      and {
        prefix = local.jobs_prefix
        tags   = { (local.row_checkpoint.key) = local.row_checkpoint.value }
      }
    }
    expiration {
      days = var.row_checkpoint_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  # Atomic writes (temp key, then server-side move) and re-run rows leave noncurrent
  # versions and delete markers under jobs/: keep them only briefly.
  rule {
    id     = "job-outputs"
    status = "Enabled"
    filter {
      prefix = local.jobs_prefix
    }
    transition {
      days          = var.outputs_infrequent_access_days
      storage_class = "STANDARD_IA"
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    expiration {
      expired_object_delete_marker = true
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_multipart_days
    }
  }

  rule {
    id     = "everything-else"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_multipart_days
    }
  }
}

data "aws_iam_policy_document" "data" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "DenyOutdatedTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.data.arn, "${aws_s3_bucket.data.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  bucket     = aws_s3_bucket.data.id
  policy     = data.aws_iam_policy_document.data.json
  depends_on = [aws_s3_bucket_public_access_block.data]
}

# ---------------------------------------------------------------------------------------
# Access-log bucket (S3 server access logs and ALB access logs)
# ---------------------------------------------------------------------------------------

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log bucket; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Access logs are not replicated; they age out under the lifecycle rule.
  #checkov:skip=CKV_AWS_145:S3 server access logging and ALB access logging only deliver to buckets encrypted with SSE-S3 (AES256), not SSE-KMS.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events of the access-log bucket.
  bucket        = local.log_bucket_name
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { Name = local.log_bucket_name })
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket     = aws_s3_bucket.logs.id
  depends_on = [aws_s3_bucket_versioning.logs]

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_expiration_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "S3ServerAccessLogs"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/${local.s3_log_prefix}*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.data.arn]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # Regions opened before August 2022 deliver ALB logs from the regional ELB account,
  # newer ones from the log-delivery service principal: allow both, only under alb/.
  statement {
    sid       = "AlbAccessLogsElbAccount"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = [local.alb_log_resource]
    principals {
      type        = "AWS"
      identifiers = [data.aws_elb_service_account.current.arn]
    }
  }

  statement {
    sid       = "AlbAccessLogsDeliveryService"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = [local.alb_log_resource]
    principals {
      type        = "Service"
      identifiers = ["logdelivery.elasticloadbalancing.amazonaws.com"]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.logs.arn, "${aws_s3_bucket.logs.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket     = aws_s3_bucket.logs.id
  policy     = data.aws_iam_policy_document.logs.json
  depends_on = [aws_s3_bucket_public_access_block.logs]
}
