{{/*
The runner pod's volumes and the runner and engine containers. The paths are the
images' own (container/agent/*.yaml, container/runner/Dockerfile):
- the store: read-write at /var/lib/runner-agent/store in the agent; read-only at
  /home/runner/_work/_tool/.runner-agent-store in the runner and the engine, inside the
  tool cache, so container jobs' -v _tool:/__t shows it too;
- work (/home/runner/_work) and the tool cache (/home/runner/_work/_tool): pod-local,
  at the same paths in the runner and the engine, so dockerd resolves a container job's
  mounts against what the runner wrote;
- socket (/run/runner-agent): the agent's API socket, read-only in the others;
- docker-run (/run in the engine and the runner): dockerd's socket, as ARC's dind-sock.
*/}}
{{- define "ra.storeReadOnly" -}}
- {name: store, mountPath: /home/runner/_work/_tool/.runner-agent-store, readOnly: true}
{{- end -}}

{{- define "ra.podVolumes" -}}
- name: store
  persistentVolumeClaim: {claimName: {{ include "ra.claim" . }}}
- name: socket
  emptyDir: {medium: Memory, sizeLimit: 16Mi}
- name: work
  emptyDir: {}
- name: toolcache
  emptyDir: {}
- name: docker-run
  emptyDir: {}
- name: docker-data
  emptyDir: {}
- name: job-token
  secret:
    secretName: {{ include "ra.tokens" . }}
    defaultMode: 0440
    items: [{key: job, path: job}]
{{ include "ra.agentVolumes" . }}
{{- include "ra.kubeApiVolume" . }}
{{- end -}}

{{- define "ra.engineContainer" -}}
{{- $v := .Values -}}
name: engine
image: {{ include "ra.image" (list . $v.images.engine) }}
imagePullPolicy: {{ $v.images.pullPolicy }}
env:
  - {name: RUNNER_AGENT_ON_CONFIG_ERROR, value: {{ $v.onConfigError | quote }}}
  - {name: RUNNER_AGENT_SERVER__METRICS_ADDRESS, value: "0.0.0.0:9103"}
  # The runner's job token (the runner holds it anyway): the stop gate's upstream calls.
  - {name: RUNNER_AGENT_UPSTREAM__TOKEN_FILE, value: /etc/runner-agent/tokens/job}
  {{- if $v.engine.mtu }}
  - {name: RUNNER_AGENT_SERVICES__DOCKERD__PARAMS__MTU, value: {{ $v.engine.mtu | quote }}}
  {{- end }}
  {{- with $v.engine.extraArgs }}
  - {name: RUNNER_AGENT_SERVICES__DOCKERD__PARAMS__EXTRA_ARGS, value: {{ toJson . | quote }}}
  {{- end }}
  {{- with $v.engine.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - {name: engine-metrics, containerPort: 9103, protocol: TCP}
{{ include "ra.probes" (list $v.engine "engine-metrics") }}
resources:
  {{- toYaml $v.engine.resources | nindent 2 }}
securityContext:
  # Docker needs it; see the README's privilege model: it holds nothing job code lacks.
  privileged: true
  runAsUser: 0
volumeMounts:
  - {name: work, mountPath: /home/runner/_work}
  - {name: toolcache, mountPath: /home/runner/_work/_tool}
  {{- include "ra.storeReadOnly" . | nindent 2 }}
  - {name: docker-run, mountPath: /run}
  - {name: socket, mountPath: /run/runner-agent, readOnly: true}
  - {name: docker-data, mountPath: /var/lib/docker}
  - {name: job-token, mountPath: /etc/runner-agent/tokens, readOnly: true}
  # The runner's externals, copied by the externals init container, at the runner's path.
  - {name: externals, mountPath: /home/runner/externals, readOnly: true}
{{- end -}}

{{- define "ra.runnerMounts" -}}
- {name: work, mountPath: /home/runner/_work}
- {name: toolcache, mountPath: /home/runner/_work/_tool}
{{ include "ra.storeReadOnly" . }}
- {name: docker-run, mountPath: /run}
- {name: socket, mountPath: /run/runner-agent, readOnly: true}
- {name: job-token, mountPath: /etc/runner-agent/tokens, readOnly: true}
{{- end -}}

{{- define "ra.runnerEnv" -}}
- {name: RUNNER_AGENT_SOCKET, value: /run/runner-agent/api.sock}
- {name: RUNNER_AGENT_TOKEN_FILE, value: /etc/runner-agent/tokens/job}
{{- if .Values.engine.enabled }}
- {name: DOCKER_HOST, value: "unix:///var/run/docker.sock"}
- {name: RUNNER_WAIT_FOR_DOCKER_IN_SECONDS, value: "120"}
{{- end }}
{{- end -}}
