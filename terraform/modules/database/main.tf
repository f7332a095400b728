# The job table: RDS PostgreSQL in private subnets, encrypted with the project key, TLS
# enforced, automated backups, deletion protection, enhanced monitoring and Performance
# Insights. The master password is generated at apply time (ephemeral: it never enters the
# Terraform state or plan) and written, as the complete PELLETSEG_DATABASE_URL, to a Secrets
# Manager secret that the containers read at start.

data "aws_partition" "current" {}

locals {
  identifier = "${var.name}-jobs"
  port       = 5432
}

resource "aws_db_subnet_group" "this" {
  name        = local.identifier
  description = "Private subnets of the pelletseg job table"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "db" {
  name        = "${local.identifier}-db"
  description = "PostgreSQL job table: reachable only from pelletseg components"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${local.identifier}-db" })
}

resource "aws_vpc_security_group_ingress_rule" "clients" {
  for_each                     = var.client_security_group_ids
  security_group_id            = aws_security_group.db.id
  description                  = "PostgreSQL from ${each.key}"
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
}

resource "aws_db_parameter_group" "this" {
  name        = "${local.identifier}-pg${var.engine_major_version}"
  family      = "postgres${var.engine_major_version}"
  description = "pelletseg job table: TLS only, slow-statement and connection logging"
  tags        = var.tags

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
  parameter {
    name  = "log_min_duration_statement"
    value = tostring(var.log_min_duration_ms)
  }
  parameter {
    name  = "log_statement"
    value = "ddl"
  }
  parameter {
    name  = "log_connections"
    value = "1"
  }
  parameter {
    name  = "log_disconnections"
    value = "1"
  }
  parameter {
    name  = "log_lock_waits"
    value = "1"
  }
}

data "aws_iam_policy_document" "monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "monitoring" {
  name               = "${local.identifier}-rds-monitoring"
  description        = "RDS enhanced monitoring of the pelletseg job table"
  assume_role_policy = data.aws_iam_policy_document.monitoring_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "monitoring" {
  role       = aws_iam_role.monitoring.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

# Ephemeral: generated during apply, used only by write-only arguments below.
ephemeral "aws_secretsmanager_random_password" "master" {
  password_length     = 40
  exclude_punctuation = true
}

resource "aws_db_instance" "this" {
  identifier                            = local.identifier
  engine                                = "postgres"
  engine_version                        = var.engine_version
  instance_class                        = var.instance_class
  db_name                               = var.database_name
  username                              = var.username
  password_wo                           = ephemeral.aws_secretsmanager_random_password.master.random_password
  password_wo_version                   = var.password_version
  port                                  = local.port
  allocated_storage                     = var.allocated_storage_gib
  max_allocated_storage                 = var.max_allocated_storage_gib
  storage_type                          = "gp3"
  storage_encrypted                     = true
  kms_key_id                            = var.kms_key_arn
  db_subnet_group_name                  = aws_db_subnet_group.this.name
  vpc_security_group_ids                = [aws_security_group.db.id]
  parameter_group_name                  = aws_db_parameter_group.this.name
  publicly_accessible                   = false
  multi_az                              = var.multi_az
  ca_cert_identifier                    = "rds-ca-rsa2048-g1"
  iam_database_authentication_enabled   = true
  backup_retention_period               = var.backup_retention_days
  backup_window                         = "02:00-03:00"
  maintenance_window                    = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot                 = true
  delete_automated_backups              = false
  deletion_protection                   = var.deletion_protection
  skip_final_snapshot                   = var.skip_final_snapshot
  final_snapshot_identifier             = var.skip_final_snapshot ? null : "${local.identifier}-final"
  auto_minor_version_upgrade            = true
  apply_immediately                     = false
  enabled_cloudwatch_logs_exports       = ["postgresql", "upgrade"]
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.monitoring.arn
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = var.kms_key_arn
  performance_insights_retention_period = 7
  tags                                  = var.tags

  depends_on = [aws_iam_role_policy_attachment.monitoring]
}

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:The secret holds the whole PELLETSEG_DATABASE_URL written with the RDS password in one apply; rotate both together by raising password_version (deploy/README.md, "Rotate the database password"), not with a rotation Lambda that would update only one of them.
  name                    = "${var.name}/database-url"
  description             = "PELLETSEG_DATABASE_URL of the pelletseg job table (postgresql+psycopg://...)"
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id                = aws_secretsmanager_secret.database_url.id
  secret_string_wo         = "postgresql+psycopg://${var.username}:${ephemeral.aws_secretsmanager_random_password.master.random_password}@${aws_db_instance.this.address}:${local.port}/${var.database_name}?sslmode=require"
  secret_string_wo_version = var.password_version
}
