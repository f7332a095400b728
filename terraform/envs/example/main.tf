# pelletseg on AWS: the API on ECS Fargate behind HTTPS, SQS queues plan/rows/reduce with
# dead-letter queues, S3 for blobs, RDS PostgreSQL for the job table, CPU workers (plan,
# reduce) on Fargate, and spot GPU workers (rows) that scale with the backlog and to zero.
# deploy/README.md walks through it from an empty account to a processed pellet.

data "aws_caller_identity" "current" {}

locals {
  name         = "${var.project}-${var.environment}"
  bucket_name  = coalesce(var.bucket_name, "${local.name}-${data.aws_caller_identity.current.account_id}-${var.region}")
  gpu_asg_name = "${local.name}-gpu-workers"

  log_components = ["api", "migrate", "cpu-worker", "scheduler", "gpu-worker", "ecs-exec", "vpc-flow-logs"]

  # Celery over SQS: credentials from the task/instance role ("sqs://" has none), queues
  # predefined (keyed by PELLETSEG_QUEUE_PREFIX + queue, as queues/app.py names them) so
  # that kombu never lists or creates queues.
  broker_transport_options = jsonencode({
    region            = var.region
    predefined_queues = module.queues.predefined_queues
  })

  # The PELLETSEG_* settings (core/settings.py) every container gets. The database URL
  # is a secret, injected from Secrets Manager (local.secrets).
  common_environment = {
    PELLETSEG_HOME                     = "/data/home"
    PELLETSEG_CACHE_DIR                = "/data/cache"
    PELLETSEG_BROKER_URL               = "sqs://"
    PELLETSEG_BROKER_TRANSPORT_OPTIONS = local.broker_transport_options
    PELLETSEG_STORAGE_URL              = module.storage.storage_url
    PELLETSEG_QUEUE_PREFIX             = module.queues.queue_prefix
    PELLETSEG_ALLOWED_SOURCE_SCHEMES   = jsonencode(["s3"])
    PELLETSEG_MAX_ATTEMPTS             = tostring(var.max_attempts)
    PELLETSEG_REDUCE_TIMEOUT_SECONDS   = tostring(module.queues.visibility_timeouts["reduce"])
  }
  api_environment = merge(local.common_environment, {
    PELLETSEG_API_HOST = "0.0.0.0"
    PELLETSEG_API_PORT = "8000"
    PELLETSEG_API_AUTH = "true"
  })
  # Workers run the reconcile pass, which deletes jobs past their retention (when set).
  retention_environment = var.retention_days == null ? {} : {
    PELLETSEG_RETENTION_DAYS = tostring(var.retention_days)
  }
  cpu_worker_environment = merge(local.common_environment, local.retention_environment, {
    PELLETSEG_DEVICE = "cpu"
  })
  gpu_worker_environment = merge(local.common_environment, local.retention_environment, {
    PELLETSEG_DEVICE    = "cuda"
    PELLETSEG_SPOT_MODE = var.gpu_spot_mode
  })
  secrets = {
    PELLETSEG_DATABASE_URL   = module.database.url_secret_arn
    PELLETSEG_WEBHOOK_SECRET = module.secrets.webhook_secret_arn
  }

  api_image    = "${module.registry.repository_urls["api"]}:${var.api_image_tag}"
  worker_image = "${module.registry.repository_urls["worker"]}:${var.worker_image_tag}"
  # the same build (tag) as the worker image, without torch: plan, reduce, beat on Fargate
  cpu_worker_image = "${module.registry.repository_urls["worker-cpu"]}:${var.worker_image_tag}"
}

module "encryption" {
  source = "../../modules/encryption"
  name   = local.name
}

module "logs" {
  source         = "../../modules/logs"
  name           = local.name
  components     = local.log_components
  kms_key_arn    = module.encryption.key_arn
  retention_days = var.log_retention_days
}

module "network" {
  source             = "../../modules/network"
  name               = local.name
  flow_log_group_arn = module.logs.group_arns["vpc-flow-logs"]
  flow_log_role_arn  = module.iam.flow_logs_role_arn
}

module "storage" {
  source               = "../../modules/storage"
  bucket_name          = local.bucket_name
  prefix               = var.storage_prefix
  kms_key_arn          = module.encryption.key_arn
  cors_allowed_origins = var.cors_allowed_origins
  force_destroy        = !var.protect_from_destroy
}

module "queues" {
  source = "../../modules/queues"
  name   = local.name
  # A GPU worker's rows_in_flight messages are received together and all start at once (a
  # threads pool of N with prefetch multiplier 1 reserves N), so none waits in the worker
  # for another to finish; but their forward passes take turns on the one GPU, so each takes
  # up to N times as long as alone: the rows visibility timeout allows for that.
  # With stream_reduce the reduce queue also carries one pelletseg.stitch message per job,
  # in flight for as long as the job's rows run: the reduce timeout need not cover it, and
  # stays sized for the reducer. If the message becomes visible again while its stitcher
  # runs, the second receiver finds the job's stitch lease taken and returns at once, and the
  # message is deleted (its 2nd receive: with max_attempts = 1 it would go to the reduce DLQ
  # instead, a false alarm); if the first stitcher died, its lease has expired and the second
  # takes over.
  expected_seconds = {
    plan   = var.expected_plan_seconds
    rows   = var.expected_row_seconds * var.gpu_rows_in_flight
    reduce = var.expected_reduce_seconds
  }
  visibility_timeout_factor = var.visibility_timeout_factor
  startup_seconds           = var.startup_seconds
  max_receive_count         = var.max_attempts
  kms_key_arn               = module.encryption.key_arn
  alarm_actions             = var.alarm_actions
}

module "registry" {
  source       = "../../modules/registry"
  name         = local.name
  kms_key_arn  = module.encryption.key_arn
  force_delete = !var.protect_from_destroy
}

module "secrets" {
  source               = "../../modules/secrets"
  name                 = local.name
  kms_key_arn          = module.encryption.key_arn
  recovery_window_days = var.protect_from_destroy ? 7 : 0
}

module "database" {
  source     = "../../modules/database"
  name       = local.name
  vpc_id     = module.network.vpc_id
  subnet_ids = module.network.private_subnet_ids
  client_security_group_ids = {
    api         = module.api.tasks_security_group_id
    cpu-workers = module.cpu_workers.security_group_id
    gpu-workers = module.gpu_workers.security_group_id
  }
  kms_key_arn                 = module.encryption.key_arn
  instance_class              = var.db_instance_class
  multi_az                    = var.db_multi_az
  password_version            = var.db_password_version
  deletion_protection         = var.protect_from_destroy
  skip_final_snapshot         = !var.protect_from_destroy
  secret_recovery_window_days = var.protect_from_destroy ? 7 : 0
}

module "iam" {
  source                   = "../../modules/iam"
  name                     = local.name
  bucket_arn               = module.storage.bucket_arn
  storage_prefix           = var.storage_prefix
  extra_source_bucket_arns = var.extra_source_bucket_arns
  queue_arns               = module.queues.queue_arns
  kms_key_arn              = module.encryption.key_arn
  secret_arns              = values(local.secrets)
  log_group_arns           = module.logs.group_arns
  repository_arns          = module.registry.repository_arns
  gpu_asg_name             = local.gpu_asg_name
}

module "ecs_cluster" {
  source              = "../../modules/ecs_cluster"
  name                = local.name
  kms_key_arn         = module.encryption.key_arn
  exec_log_group_name = module.logs.group_names["ecs-exec"]
}

module "api" {
  source                = "../../modules/api_service"
  name                  = local.name
  region                = var.region
  vpc_id                = module.network.vpc_id
  vpc_cidr_block        = module.network.vpc_cidr_block
  public_subnet_ids     = module.network.public_subnet_ids
  private_subnet_ids    = module.network.private_subnet_ids
  allowed_cidrs         = var.api_allowed_cidrs
  metrics_allowed_cidrs = var.metrics_allowed_cidrs
  certificate_arn       = var.certificate_arn
  deletion_protection   = var.protect_from_destroy
  access_log_bucket     = module.storage.log_bucket_name
  access_log_prefix     = module.storage.alb_log_prefix
  log_retention_days    = var.log_retention_days
  kms_key_arn           = module.encryption.key_arn
  cluster_arn           = module.ecs_cluster.cluster_arn
  cluster_name          = module.ecs_cluster.cluster_name
  image                 = local.api_image
  execution_role_arn    = module.iam.execution_role_arns["api"]
  task_role_arn         = module.iam.task_role_arns["api"]
  environment           = local.api_environment
  secrets               = local.secrets
  log_group_name        = module.logs.group_names["api"]
}

module "cpu_workers" {
  source              = "../../modules/cpu_workers"
  name                = local.name
  region              = var.region
  vpc_id              = module.network.vpc_id
  vpc_cidr_block      = module.network.vpc_cidr_block
  private_subnet_ids  = module.network.private_subnet_ids
  cluster_arn         = module.ecs_cluster.cluster_arn
  cluster_name        = module.ecs_cluster.cluster_name
  worker_image        = local.cpu_worker_image
  api_image           = local.api_image
  queues              = [module.queues.queue_names["plan"], module.queues.queue_names["reduce"]]
  queue_names         = module.queues.queue_names
  task_role_arns      = module.iam.task_role_arns
  execution_role_arns = module.iam.execution_role_arns
  environment         = local.cpu_worker_environment
  secrets             = local.secrets
  log_group_names     = module.logs.group_names
  stream_reduce       = var.stream_reduce
  reduce_concurrency  = var.reduce_concurrency
}

# backlog_per_instance comes from the one-row time, not x gpu_rows_in_flight: see the
# module's backlog policy for why rows in flight leave the scaling target alone.
module "gpu_workers" {
  source               = "../../modules/gpu_workers"
  name                 = local.name
  name_asg             = local.gpu_asg_name
  region               = var.region
  vpc_id               = module.network.vpc_id
  vpc_cidr_block       = module.network.vpc_cidr_block
  subnet_ids           = module.network.private_subnet_ids
  ami_id               = var.gpu_ami_id
  instance_types       = var.gpu_instance_types
  max_size             = var.gpu_max_instances
  rows_in_flight       = var.gpu_rows_in_flight
  backlog_per_instance = max(1, floor(var.acceptable_row_wait_seconds / var.expected_row_seconds))
  rows_queue_name      = module.queues.queue_names["rows"]
  instance_profile_arn = module.iam.gpu_worker_instance_profile_arn
  image                = local.worker_image
  environment          = local.gpu_worker_environment
  secrets              = local.secrets
  queues               = [module.queues.queue_names["rows"]]
  log_group_name       = module.logs.group_names["gpu-worker"]
}
