{{/* Names and labels. */}}
{{- define "ra.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The standalone runners' StatefulSet: its pods carry a controller-revision-hash
label of the name and a hash of up to 11 characters, which must fit 63. */}}
{{- define "ra.runners" -}}
{{- printf "%s-runner" (include "ra.fullname" . | trunc 45 | trimSuffix "-") -}}
{{- end -}}

{{- define "ra.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ra.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ra.image" -}}
{{- $root := index . 0 -}}{{- $name := index . 1 -}}
{{- printf "%s/%s/%s:%s" $root.Values.images.registry $root.Values.images.owner $name (default $root.Chart.AppVersion $root.Values.images.tag) -}}
{{- end -}}

{{- define "ra.claim" -}}
{{- default (printf "%s-store" (include "ra.fullname" .)) .Values.store.existingClaim -}}
{{- end -}}

{{- define "ra.tokens" -}}
{{- default (printf "%s-tokens" (include "ra.fullname" .)) .Values.tokens.existingSecret -}}
{{- end -}}

{{- define "ra.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ra.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- if and .Values.annotatePod.enabled (not .Values.serviceAccount.name) -}}
{{- fail "annotatePod.enabled with serviceAccount.create: false needs serviceAccount.name: the Role is bound to that ServiceAccount (not the namespace's default, which every pod gets)" -}}
{{- end -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Whether a prometheus-operator kind renders: enabled, and the API served or forced. */}}
{{- define "ra.monitoring" -}}
{{- $root := index . 0 -}}{{- $cfg := index . 1 -}}
{{- if and $cfg.enabled (or $cfg.force ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{/*
The agent's configuration file: what the chart decides (paths the volumes below mount,
the tokens, GitHub's secrets), with .Values.config merged over it.
*/}}
{{- define "ra.config" -}}
{{- $v := .Values -}}
{{- $github := dict -}}
{{- if $v.github.apiUrl }}{{- $_ := set $github "api_url" $v.github.apiUrl -}}{{- end -}}
{{- if $v.github.token.secretName }}{{- $_ := set $github "token_file" "/etc/runner-agent/github/token" -}}{{- end -}}
{{- if $v.github.app.id }}{{- $_ := set $github "app_id" $v.github.app.id -}}{{- end -}}
{{- if $v.github.app.clientId }}{{- $_ := set $github "client_id" $v.github.app.clientId -}}{{- end -}}
{{- if $v.github.app.installationId }}{{- $_ := set $github "installation_id" $v.github.app.installationId -}}{{- end -}}
{{- if $v.github.app.privateKey.secretName }}{{- $_ := set $github "private_key_file" "/etc/runner-agent/github/private-key" -}}{{- end -}}
{{- if $v.github.scaleSets }}{{- $_ := set $github "scale_sets" $v.github.scaleSets -}}{{- end -}}
{{- $base := dict
  "server" (dict
    "metrics_address" "0.0.0.0:9102"
    "socket_path" "/run/runner-agent/api.sock"
    "socket_group" 123
    "job_token_file" "/etc/runner-agent/tokens/job"
    "admin_token_file" "/etc/runner-agent/tokens/admin")
  "cache" (dict "root" "/var/lib/runner-agent/store" "lock_backend" $v.store.lockBackend)
  "gpu" (dict "backend" $v.gpu.backend)
  "logging" (dict "format" "json") -}}
{{- if $github }}{{- $_ := set $base "github" $github -}}{{- end -}}
{{- if $v.catalog }}{{- $_ := set $base "catalog" (dict "paths" (list "/etc/runner-agent/catalog")) -}}{{- end -}}
{{- toYaml (mustMergeOverwrite $base (deepCopy $v.config)) -}}
{{- end -}}

{{- define "ra.restricted" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{/* The agent container's securityContext: uid 10001 or the sandboxed mode. */}}
{{- define "ra.agentSecurity" -}}
{{- if .Values.agent.sandbox.enabled -}}
runAsUser: 0
runAsGroup: 123
runAsNonRoot: false
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
# The sandbox's own profile confines scripts; the agent needs unshare and mount.
seccompProfile: {type: Unconfined}
{{- with .Values.agent.sandbox.appArmorProfile }}
appArmorProfile: {type: {{ . }}}
{{- end }}
capabilities:
  drop: [ALL]
  add: [SYS_ADMIN, SETUID, SETGID, SETPCAP, CHOWN, FOWNER, DAC_OVERRIDE, KILL, NET_ADMIN]
{{- else -}}
runAsUser: 10001
runAsGroup: 123
{{ include "ra.restricted" . }}
{{- end -}}
{{- end -}}

{{- define "ra.probes" -}}
{{- $p := index . 0 -}}{{- $port := index . 1 -}}
startupProbe:
  httpGet: {path: "/readyz?exclude=gpu", port: {{ $port }}}
  {{- toYaml $p.startupProbe | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ $port }}}
  {{- toYaml $p.readinessProbe | nindent 2 }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ $port }}}
  {{- toYaml $p.livenessProbe | nindent 2 }}
{{- end -}}

{{/*
The agent container. role: runner (beside a runner, as a native sidecar) or warmer.
*/}}
{{- define "ra.agentContainer" -}}
{{- $root := index . 0 -}}{{- $role := index . 1 -}}{{- $v := $root.Values -}}
name: runner-agent
image: {{ include "ra.image" (list $root $v.images.agent) }}
imagePullPolicy: {{ $v.images.pullPolicy }}
{{- if eq $role "runner" }}
# A native sidecar: started before the runner, restarted by the kubelet, stopped after it.
restartPolicy: Always
{{- end }}
args: [serve, --config, /etc/runner-agent/config/config.yaml]
env:
  # The CLI in this container (kubectl exec ... runner-agent status) reads the same file.
  - {name: RUNNER_AGENT_CONFIG, value: /etc/runner-agent/config/config.yaml}
  - {name: RUNNER_AGENT_ON_CONFIG_ERROR, value: {{ $v.onConfigError | quote }}}
  - {name: RUNNER_AGENT_SERVER__METRICS_ADDRESS, value: "0.0.0.0:9102"}
  {{- if eq $role "warmer" }}
  # The webhook listener and its secret are the warmer's alone: runner pods hold neither.
  - {name: RUNNER_AGENT_SERVER__WEBHOOK_ADDRESS, value: "0.0.0.0:8080"}
  - {name: RUNNER_AGENT_GITHUB__WEBHOOK_SECRET_FILE, value: /etc/runner-agent/webhook/secret}
  {{- end }}
  {{- if and (eq $role "runner") $v.gpu.agentSeesAllGpus (ne $v.gpu.backend "off") (gt (int $v.runners.gpus) 0) }}
  - {name: NVIDIA_VISIBLE_DEVICES, value: all}
  - {name: NVIDIA_DRIVER_CAPABILITIES, value: utility}
  {{- end }}
  {{- if and (eq $role "runner") $v.annotatePod.enabled }}
  # The job's identity on this pod, through the API token mounted below.
  - {name: RUNNER_AGENT_KUBERNETES__ANNOTATE_POD, value: "true"}
  - name: POD_NAME
    valueFrom: {fieldRef: {fieldPath: metadata.name}}
  - name: POD_NAMESPACE
    valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
  {{- end }}
  {{- with $v.agent.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - {name: metrics, containerPort: 9102, protocol: TCP}
  {{- if eq $role "warmer" }}
  - {name: webhook, containerPort: 8080, protocol: TCP}
  {{- end }}
{{ include "ra.probes" (list $v.agent "metrics") }}
resources:
  {{- toYaml (eq $role "warmer" | ternary $v.warmer.resources $v.agent.resources) | nindent 2 }}
securityContext:
  {{- include "ra.agentSecurity" $root | nindent 2 }}
volumeMounts:
  - {name: store, mountPath: /var/lib/runner-agent/store}
  - {name: socket, mountPath: /run/runner-agent}
  - {name: agent-tmp, mountPath: /tmp}
  - {name: config, mountPath: /etc/runner-agent/config, readOnly: true}
  - {name: tokens, mountPath: /etc/runner-agent/tokens, readOnly: true}
  {{- if $v.catalog }}
  - {name: catalog, mountPath: /etc/runner-agent/catalog, readOnly: true}
  {{- end }}
  {{- if include "ra.githubVolume" $root }}
  - {name: github, mountPath: /etc/runner-agent/github, readOnly: true}
  {{- end }}
  {{- if and (eq $role "warmer") $v.github.webhookSecret.secretName }}
  - {name: webhook-secret, mountPath: /etc/runner-agent/webhook, readOnly: true}
  {{- end }}
  {{- if and (eq $role "runner") $v.annotatePod.enabled }}
  - {name: kube-api, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
  {{- end }}
{{- end -}}

{{/*
The agent's Kubernetes API access (annotatePod): what automounting would give, a token
the kubelet renews, the cluster's CA and the namespace, but for the agent alone.
*/}}
{{- define "ra.kubeApiVolume" -}}
{{- if .Values.annotatePod.enabled }}
- name: kube-api
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken: {path: token, expirationSeconds: 3600}
      - configMap: {name: kube-root-ca.crt, items: [{key: ca.crt, path: ca.crt}]}
      - downwardAPI: {items: [{path: namespace, fieldRef: {fieldPath: metadata.namespace}}]}
{{- end }}
{{- end -}}

{{- define "ra.githubVolume" -}}
{{- $g := .Values.github -}}
{{- if or $g.token.secretName $g.app.privateKey.secretName -}}true{{- end -}}
{{- end -}}

{{/* The agent's volumes (the store and the socket are the pod's). */}}
{{- define "ra.agentVolumes" -}}
{{- $v := .Values -}}
- name: config
  configMap: {name: {{ include "ra.fullname" . }}-config}
- name: tokens
  secret: {secretName: {{ include "ra.tokens" . }}, defaultMode: 0440}
- name: agent-tmp
  emptyDir: {}
{{- if $v.catalog }}
- name: catalog
  configMap:
    name: {{ include "ra.fullname" . }}-catalog
    items:
      {{- range $id, $_ := $v.catalog }}
      - {key: {{ $id }}.yaml, path: {{ $id }}/feature.yaml}
      {{- end }}
{{- end }}
{{- if include "ra.githubVolume" . }}
- name: github
  projected:
    defaultMode: 0440
    sources:
      {{- with $v.github.token.secretName }}
      - secret: {name: {{ . }}, items: [{key: {{ $v.github.token.key }}, path: token}]}
      {{- end }}
      {{- with $v.github.app.privateKey.secretName }}
      - secret: {name: {{ . }}, items: [{key: {{ $v.github.app.privateKey.key }}, path: private-key}]}
      {{- end }}
{{- end }}
{{- end -}}
