{{/*
The alerts (tests/charts/ runs promtool check and promtool test on them). Each names
the pod and says where to look.
*/}}
{{- define "ra.rules" -}}
{{- $r := .Values.monitoring.rules -}}
groups:
  - name: runner-agent
    rules:
      - alert: RunnerAgentGpuUnhealthy
        # In scope: this runner's GPUs. A verdict stays until an admin clears it.
        expr: (runner_agent_gpu_healthy == 0) and on(namespace, pod, instance, gpu) (runner_agent_gpu_in_scope == 1)
        for: 1m
        labels: {severity: critical}
        annotations:
          summary: "GPU {{`{{ $labels.gpu }}`}} ({{`{{ $labels.uuid }}`}}) of {{`{{ $labels.namespace }}`}}/{{`{{ $labels.pod }}`}} is unhealthy"
          description: "runner-agent took the runner out of rotation. See runner_agent_gpu_health_info and `runner-agent gpu`; clear with `runner-agent gpu clear UUID` once the GPU is fixed."
      - alert: RunnerAgentServiceCrashLooping
        # Crashes and failed health checks together (two exits and a hang are a loop);
        # manual restarts (an operator's, a changed spec) are not failures.
        expr: sum by (namespace, pod, instance, service) (increase(runner_agent_service_restarts_total{reason!="manual"}[15m])) >= 3
        labels: {severity: warning}
        annotations:
          summary: "service {{`{{ $labels.service }}`}} in {{`{{ $labels.namespace }}`}}/{{`{{ $labels.pod }}`}} restarted {{`{{ $value | humanize }}`}} times in 15 minutes"
          description: "It exited or failed its health check each time. See `runner-agent services` (the last exit and health results) and the service's log."
      # One store per namespace, reported by every pod that mounts it: pods come and go
      # (ARC's are ephemeral), so the alert follows the namespace, not an instance.
      - alert: RunnerAgentCacheNearBudget
        expr: max by (namespace) (runner_agent_cache_bytes) > {{ $r.cacheBudgetRatio }} * max by (namespace) (runner_agent_cache_budget_bytes)
        for: 30m
        labels: {severity: warning}
        annotations:
          summary: "the store of namespace {{`{{ $labels.namespace }}`}} is over {{ mulf $r.cacheBudgetRatio 100 | printf "%.4g" }} % of its budget"
          description: "Evictions will remove least recently used entries. Raise cache.size_budget (and the volume) or trim features."
      - alert: RunnerAgentJobSetupSlow
        expr: histogram_quantile(0.95, sum by (namespace, le) (rate(runner_agent_job_setup_seconds_bucket[30m]))) > {{ $r.jobSetupSeconds }}
        for: 15m
        labels: {severity: warning}
        annotations:
          summary: "95 % of job setups in {{`{{ $labels.namespace }}`}} take over {{ $r.jobSetupSeconds }} s"
          description: "Jobs wait on installs: pre-warm (the warmer) or add preinstall features; check runner_agent_install_duration_seconds."
      - alert: RunnerAgentWebhookDeliveriesFailing
        expr: sum by (namespace, pod) (rate(runner_agent_webhook_deliveries_total{result=~"unauthorized|bad_body|too_large|queue_full"}[15m])) > 0
        for: 15m
        labels: {severity: warning}
        annotations:
          summary: "webhook deliveries to {{`{{ $labels.namespace }}`}}/{{`{{ $labels.pod }}`}} are failing"
          description: "unauthorized: the webhook secret differs from GitHub's; queue_full: raise github.prewarm_queue. See runner_agent_webhook_deliveries_total by result."
{{- end -}}
