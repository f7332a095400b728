# CPU side of the pipeline on ECS Fargate:
#   cpu-worker  `celery -A worker.tasks worker -Q <prefix>plan,<prefix>reduce` (deploy/Dockerfile.worker-cpu:
#               no torch, no CUDA), mostly on Fargate Spot, scaled by target tracking on the plan +
#               reduce backlog per running task; one task at a time (solo pool), or with
#               stream_reduce a threads pool of reduce_concurrency slots
#   scheduler   `celery -A worker.tasks beat`: the periodic reconcile task (exactly one)
#   migrate     a task definition for one-off `pelletseg migrate` / `pelletseg apikey` runs

locals {
  # stream_reduce: planning enqueues a streaming stitcher (pelletseg.stitch) per job on the
  # reduce queue, which holds its slot until the job's last row; a solo worker would hold up
  # the planning and reducing of every other job behind it, so the worker then runs a threads
  # pool of reduce_concurrency slots. PELLETSEG_STREAM_REDUCE comes from the same variable (a
  # caller's value is dropped), so pool and setting cannot disagree. Off, the command and
  # environment are exactly those of before (no new task definition revision).
  worker_command = [
    "celery", "-A", "worker.tasks", "worker", "-Q", join(",", var.queues),
    "--pool", var.stream_reduce ? "threads" : "solo",
    "--concurrency", var.stream_reduce ? tostring(var.reduce_concurrency) : "1",
    "--prefetch-multiplier", "1", "-n", "cpu@%h",
    "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO",
  ]
  worker_environment = merge(
    { for k, v in var.environment : k => v if k != "PELLETSEG_STREAM_REDUCE" },
    var.stream_reduce ? { PELLETSEG_STREAM_REDUCE = "true" } : {},
  )
  worker_env_list   = [for k in sort(keys(local.worker_environment)) : { name = k, value = local.worker_environment[k] }]
  scheduler_command = ["celery", "-A", "worker.tasks", "beat", "--schedule", "/data/celerybeat-schedule", "--loglevel", "INFO"]

  env_list    = [for k in sort(keys(var.environment)) : { name = k, value = var.environment[k] }]
  secret_list = [for k in sort(keys(var.secrets)) : { name = k, valueFrom = var.secrets[k] }]
  mounts = [
    { sourceVolume = "data", containerPath = "/data", readOnly = false },
    { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
  ]
  hardening = {
    user                   = "10001:10001"
    readonlyRootFilesystem = true
    linuxParameters        = { initProcessEnabled = true, capabilities = { drop = ["ALL"] } }
  }
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-cpu-workers"
  description = "pelletseg CPU workers and scheduler: no inbound; out to AWS APIs, webhooks, database"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-cpu-workers" })
}

resource "aws_vpc_security_group_egress_rule" "web" {
  for_each          = toset([for p in var.egress_ports : tostring(p)])
  security_group_id = aws_security_group.tasks.id
  description       = "AWS APIs, external sources and webhooks on ${each.value}"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
}

resource "aws_vpc_security_group_egress_rule" "db" {
  security_group_id = aws_security_group.tasks.id
  description       = "PostgreSQL job table"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

# ---------------------------------------------------------------------------------------
# cpu-worker: plan and reduce
# ---------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-cpu-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = var.execution_role_arns["cpu-worker"]
  task_role_arn            = var.task_role_arns["cpu-worker"]

  ephemeral_storage {
    size_in_gib = var.ephemeral_storage_gib # sources are copied here once per job
  }

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "data"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.hardening, {
    name        = "cpu-worker"
    image       = var.worker_image
    essential   = true
    command     = local.worker_command
    environment = local.worker_env_list
    secrets     = local.secret_list
    mountPoints = local.mounts
    stopTimeout = 120 # warm shutdown: finish the current plan/reduce task (Fargate maximum)
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["cpu-worker"]
        awslogs-region        = var.region
        awslogs-stream-prefix = "cpu-worker"
      }
    }
  })])

  tags = var.tags
}

resource "aws_ecs_service" "worker" {
  name                               = "${var.name}-cpu-worker"
  cluster                            = var.cluster_arn
  task_definition                    = aws_ecs_task_definition.worker.arn
  desired_count                      = var.min_count
  platform_version                   = "LATEST"
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200

  capacity_provider_strategy {
    capacity_provider = "FARGATE"
    base              = var.on_demand_base_count
    weight            = var.spot ? 0 : 1
  }

  dynamic "capacity_provider_strategy" {
    for_each = var.spot ? [1] : []
    content {
      capacity_provider = "FARGATE_SPOT"
      weight            = 1
    }
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  lifecycle {
    ignore_changes = [desired_count] # owned by the autoscaling policy below
  }

  tags = var.tags
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  resource_id        = "service/${var.cluster_name}/${aws_ecs_service.worker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_count
  max_capacity       = var.max_count
}

# Backlog per task = (visible plan + reduce messages) / running tasks. A message being run
# is in flight, not visible, so it never counts as backlog. With stream_reduce a stitcher
# keeps its reduce message in flight, holding one slot of a task, for its job's whole run: on
# visible messages alone a task full of stitchers looks idle (scale-in may stop it; its jobs'
# reducers then stitch the rows themselves), and up to backlog_per_task plans per task may
# wait a whole job for a slot. So the reduce queue's in-flight messages (stitchers, running
# reducers) count too, each as backlog_per_task / (reduce_concurrency - 1): a task whose slots
# but one are held is at the target, and any message waiting beyond that scales out. A stitch
# message that outlives the reduce visibility timeout is received again and deleted by the
# duplicate (envs/example/main.tf, queues), so stitchers of longer jobs stop counting.
resource "aws_appautoscaling_policy" "backlog" {
  name               = "${var.name}-cpu-worker-backlog"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value       = var.backlog_per_task
    scale_in_cooldown  = 300
    scale_out_cooldown = 60

    customized_metric_specification {
      metrics {
        id          = "plan"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = var.queue_names["plan"]
            }
          }
        }
      }
      metrics {
        id          = "reduce"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = var.queue_names["reduce"]
            }
          }
        }
      }
      dynamic "metrics" {
        for_each = var.stream_reduce ? ["reduce_held"] : []
        content {
          id          = metrics.value
          return_data = false
          metric_stat {
            stat = "Sum"
            metric {
              namespace   = "AWS/SQS"
              metric_name = "ApproximateNumberOfMessagesNotVisible"
              dimensions {
                name  = "QueueName"
                value = var.queue_names["reduce"]
              }
            }
          }
        }
      }
      metrics {
        id          = "tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = var.cluster_name
            }
            dimensions {
              name  = "ServiceName"
              value = aws_ecs_service.worker.name
            }
          }
        }
      }
      metrics {
        id          = "backlog_per_task"
        label       = var.stream_reduce ? "plan+reduce backlog and held reduce slots per running CPU worker" : "plan+reduce backlog per running CPU worker"
        expression  = var.stream_reduce ? "(plan + reduce + reduce_held * ${var.backlog_per_task} / ${var.reduce_concurrency - 1}) / tasks" : "(plan + reduce) / tasks"
        return_data = true
      }
    }
  }
}

# ---------------------------------------------------------------------------------------
# scheduler: celery beat (periodic reconcile); exactly one task
# ---------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "scheduler" {
  family                   = "${var.name}-scheduler"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = var.execution_role_arns["scheduler"]
  task_role_arn            = var.task_role_arns["scheduler"]

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "data"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.hardening, {
    name        = "scheduler"
    image       = var.worker_image
    essential   = true
    command     = local.scheduler_command
    environment = local.env_list
    mountPoints = local.mounts
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["scheduler"]
        awslogs-region        = var.region
        awslogs-stream-prefix = "scheduler"
      }
    }
  })])

  tags = var.tags
}

resource "aws_ecs_service" "scheduler" {
  name                    = "${var.name}-scheduler"
  cluster                 = var.cluster_arn
  task_definition         = aws_ecs_task_definition.scheduler.arn
  desired_count           = 1
  launch_type             = "FARGATE"
  platform_version        = "LATEST"
  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  # Never two beats at once: stop the old task before starting the new one.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }

  tags = var.tags
}

# ---------------------------------------------------------------------------------------
# migrate: one-off task definition (API image), run with `aws ecs run-task`
# ---------------------------------------------------------------------------------------

resource "aws_ecs_task_definition" "migrate" {
  family                   = "${var.name}-migrate"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 256
  memory                   = 512
  execution_role_arn       = var.execution_role_arns["migrate"]
  # No task role: migrating and managing API keys touch only the database.

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  volume {
    name = "data"
  }
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([merge(local.hardening, {
    name        = "migrate"
    image       = var.api_image
    essential   = true
    command     = ["pelletseg", "migrate"]
    environment = local.env_list
    secrets     = local.secret_list
    mountPoints = local.mounts
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = var.log_group_names["migrate"]
        awslogs-region        = var.region
        awslogs-stream-prefix = "migrate"
      }
    }
  })])

  tags = var.tags
}
