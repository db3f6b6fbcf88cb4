{{/*
The gateway container and the volumes it needs, as named templates. The standalone Deployment
uses them, and so can any other chart that wants the gateway as a sidecar in its own pod:

  # Chart.yaml of the bot's chart
  dependencies:
    - name: webhook-gateway
      version: 0.1.0
      repository: file://../webhook-gateway     # or wherever the chart is published

  # values.yaml of the bot's chart
  webhook-gateway:
    deploymentMode: sidecar
    config: {routes: [{name: my-bot, upstream: "http://127.0.0.1:3000/webhook", ...}]}

  # the bot's Deployment template, under spec.template.spec
  containers:
    - name: bot
      ...
    {{- include "webhook-gateway.sidecar.container" (index .Subcharts "webhook-gateway") | nindent 4 }}
  volumes:
    {{- include "webhook-gateway.sidecar.volumes" (index .Subcharts "webhook-gateway") | nindent 4 }}

Both render YAML list items ("- name: ..."), so they drop into existing lists. The config volume
mounts the ConfigMap this chart renders, as a directory (never subPath: a subPath mount is never
updated, and the gateway's hot reload relies on the kubelet's ..data symlink swap).
*/}}

{{- define "webhook-gateway.sidecar.container" -}}
- name: webhook-gateway
  image: {{ include "webhook-gateway.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["run", "--config", "/etc/webhook-gateway/gateway.yaml"]
  ports:
    - name: gateway
      containerPort: {{ .Values.ports.http }}
      protocol: TCP
    - name: gateway-admin
      containerPort: {{ .Values.ports.admin }}
      protocol: TCP
  {{- if or .Values.secretEnv .Values.extraEnv }}
  env:
    {{- range .Values.secretEnv }}
    - name: {{ .name }}
      valueFrom:
        secretKeyRef:
          name: {{ .secretName }}
          key: {{ .key }}
    {{- end }}
    {{- with .Values.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
  volumeMounts:
    - name: webhook-gateway-config
      mountPath: /etc/webhook-gateway
      readOnly: true
    - name: webhook-gateway-tmp
      mountPath: /tmp
    {{- range $i, $s := .Values.secretFiles }}
    - name: {{ printf "webhook-gateway-secret-%d" $i }}
      mountPath: {{ $s.mountPath }}
      readOnly: true
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: gateway-admin
    periodSeconds: {{ .Values.livenessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.livenessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.livenessProbe.failureThreshold }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: gateway-admin
    periodSeconds: {{ .Values.readinessProbe.periodSeconds }}
    timeoutSeconds: {{ .Values.readinessProbe.timeoutSeconds }}
    failureThreshold: {{ .Values.readinessProbe.failureThreshold }}
  {{- if gt (int .Values.preStopSleepSeconds) 0 }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .Values.preStopSleepSeconds }}
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
{{- end }}

{{- define "webhook-gateway.sidecar.volumes" -}}
- name: webhook-gateway-config
  configMap:
    name: {{ include "webhook-gateway.configMapName" . }}
- name: webhook-gateway-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- range $i, $s := .Values.secretFiles }}
- name: {{ printf "webhook-gateway-secret-%d" $i }}
  secret:
    secretName: {{ $s.secretName }}
    defaultMode: 0444
{{- end }}
{{- end }}
