# GPU workers for the rows queue: a launch template (IMDSv2 only, encrypted volumes, GPU AMI
# variable) and an autoscaling group of spot instances over several GPU types, min 0, with
# capacity rebalancing. Scaling:
#   * target tracking on backlog per instance = ApproximateNumberOfMessagesVisible(rows) /
#     GroupInServiceInstances (metric math), the target being how many rows one instance
#     may have waiting (acceptable latency / expected row time);
#   * a step policy that starts the first instance when rows wait while the group is at 0
#     (the ratio is undefined with no instance in service);
#   * a termination lifecycle hook so scale-in lets the current rows finish.
# Each GPU's worker runs rows_in_flight rows at once (Celery threads pool, one model).

locals {
  hook_name = "drain"

  # The pool's concurrency and PELLETSEG_ROWS_IN_FLIGHT come from the one variable, so the
  # worker command and its settings cannot disagree (the module's value wins over a caller's).
  environment = merge(var.environment, {
    PELLETSEG_ROWS_IN_FLIGHT = tostring(var.rows_in_flight)
  })
}

resource "aws_security_group" "this" {
  name        = "${var.name}-gpu-workers"
  description = "pelletseg GPU workers: no inbound; out to AWS APIs, sources and the database"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-gpu-workers" })
}

resource "aws_vpc_security_group_egress_rule" "web" {
  for_each          = toset([for p in var.egress_ports : tostring(p)])
  security_group_id = aws_security_group.this.id
  description       = "AWS APIs, image registry, external sources and webhooks on ${each.value}"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
}

resource "aws_vpc_security_group_egress_rule" "db" {
  security_group_id = aws_security_group.this.id
  description       = "PostgreSQL job table"
  cidr_ipv4         = var.vpc_cidr_block
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}

resource "aws_launch_template" "this" {
  name                   = "${var.name}-gpu-worker"
  description            = "pelletseg GPU worker (rows queue)"
  image_id               = var.ami_id
  update_default_version = true
  ebs_optimized          = true
  vpc_security_group_ids = [aws_security_group.this.id]

  iam_instance_profile {
    arn = var.instance_profile_arn
  }

  # IMDSv2 only, hop limit 1: the worker containers run on the host network namespace
  # (they listen on nothing) and read the spot notice and role credentials directly.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = var.root_device_name
    ebs {
      volume_size           = var.root_volume_gib
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(templatefile("${path.module}/user_data.sh.tftpl", {
    region         = var.region
    image          = var.image
    registry       = split("/", var.image)[0]
    environment    = local.environment
    secrets        = var.secrets
    queues         = join(",", var.queues)
    rows_in_flight = var.rows_in_flight
    log_group_name = var.log_group_name
    drain_seconds  = var.drain_seconds
    asg_name       = var.name_asg
    hook_name      = local.hook_name
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-gpu-worker", Component = "gpu-worker" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-gpu-worker", Component = "gpu-worker" })
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "this" {
  #checkov:skip=CKV2_AWS_15:Queue consumers take no inbound traffic; there is no load balancer to attach.
  name                      = var.name_asg
  vpc_zone_identifier       = var.subnet_ids
  min_size                  = 0
  max_size                  = var.max_size
  desired_capacity          = 0
  capacity_rebalance        = true
  default_instance_warmup   = var.instance_warmup_seconds
  health_check_type         = "EC2"
  health_check_grace_period = var.instance_warmup_seconds
  metrics_granularity       = "1Minute"
  enabled_metrics           = ["GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances", "GroupTerminatingInstances", "GroupTotalInstances"]

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = var.on_demand_base_capacity
      on_demand_percentage_above_base_capacity = var.on_demand_percentage_above_base
      spot_allocation_strategy                 = "price-capacity-optimized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.this.id
        version            = "$Latest"
      }

      dynamic "override" {
        for_each = var.instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  initial_lifecycle_hook {
    name                 = local.hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    default_result       = "CONTINUE"
    heartbeat_timeout    = var.drain_seconds + 60
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${var.name}-gpu-worker", Component = "gpu-worker" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity] # owned by the scaling policies
  }
}

# Target tracking on rows backlog per in-service instance. Visible messages only: the
# rows_in_flight messages an instance holds are not visible, so they never count as backlog.
# The target is not multiplied by rows_in_flight: forward passes take turns on the one GPU,
# so rows in flight raise an instance's throughput only by the reads and writes they overlap
# (between 1x and rows_in_flight x one row at a time); a target from the one-row time errs
# towards more instances rather than towards rows waiting longer than acceptable.
resource "aws_autoscaling_policy" "backlog" {
  name                   = "${var.name}-gpu-rows-backlog"
  autoscaling_group_name = aws_autoscaling_group.this.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.backlog_per_instance

    customized_metric_specification {
      metrics {
        id          = "visible"
        label       = "rows messages visible"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = var.rows_queue_name
            }
          }
        }
      }
      metrics {
        id          = "in_service"
        label       = "GPU workers in service"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "AWS/AutoScaling"
            metric_name = "GroupInServiceInstances"
            dimensions {
              name  = "AutoScalingGroupName"
              value = aws_autoscaling_group.this.name
            }
          }
        }
      }
      metrics {
        id          = "backlog_per_instance"
        label       = "rows backlog per GPU worker"
        expression  = "visible / in_service"
        return_data = true
      }
    }
  }
}

# From zero: rows are waiting and the group wants no instance -> exactly one.
resource "aws_autoscaling_policy" "from_zero" {
  name                   = "${var.name}-gpu-from-zero"
  autoscaling_group_name = aws_autoscaling_group.this.name
  policy_type            = "StepScaling"
  adjustment_type        = "ExactCapacity"

  step_adjustment {
    scaling_adjustment          = 1
    metric_interval_lower_bound = 0
  }
}

resource "aws_cloudwatch_metric_alarm" "from_zero" {
  alarm_name          = "${var.name}-gpu-rows-waiting-at-zero"
  alarm_description   = "Rows wait in ${var.rows_queue_name} while the GPU group wants 0 instances: start one."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_autoscaling_policy.from_zero.arn]

  metric_query {
    id          = "visible"
    return_data = false
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = var.rows_queue_name }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "desired"
    return_data = false
    metric {
      namespace   = "AWS/AutoScaling"
      metric_name = "GroupDesiredCapacity"
      dimensions  = { AutoScalingGroupName = aws_autoscaling_group.this.name }
      period      = 60
      stat        = "Maximum"
    }
  }

  metric_query {
    id          = "waiting_at_zero"
    label       = "rows waiting while the group is at zero"
    expression  = "IF(visible > 0 AND desired == 0, 1, 0)"
    return_data = true
  }

  tags = var.tags
}
