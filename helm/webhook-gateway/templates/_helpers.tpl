{{/*
Helpers. They use only .Values, .Release and .Chart, so they work both in this chart and when a
parent chart passes this chart's context: (index .Subcharts "webhook-gateway").
*/}}

{{- define "webhook-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "webhook-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "webhook-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "webhook-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "webhook-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: webhook-gateway
{{- end }}

{{- define "webhook-gateway.configMapName" -}}
{{- include "webhook-gateway.fullname" . }}-config
{{- end }}

{{- define "webhook-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* HOST:PORT as the gateway config wants it: [::]:8080 for IPv6 addresses. */}}
{{- define "webhook-gateway.listen" -}}
{{- $host := .host }}
{{- if contains ":" $host }}{{ $host = printf "[%s]" $host }}{{ end }}
{{- printf "%s:%d" $host (int .port) }}
{{- end }}

{{/* The gateway config file: the user's `config` plus listen / admin_listen from `ports`. */}}
{{- define "webhook-gateway.configFile" -}}
{{- range list "listen" "admin_listen" }}
{{- if hasKey $.Values.config . }}
{{- fail (printf "config.%s is set by the chart from ports and bindAddress: remove it from config" .) }}
{{- end }}
{{- end }}
{{- if eq (int .Values.ports.http) (int .Values.ports.admin) }}
{{- fail "ports.http and ports.admin must differ: the admin endpoints never share the webhook port" }}
{{- end }}
{{- $listen := include "webhook-gateway.listen" (dict "host" .Values.bindAddress "port" .Values.ports.http) }}
{{- $admin := include "webhook-gateway.listen" (dict "host" .Values.bindAddress "port" .Values.ports.admin) }}
{{- $cfg := merge (dict "listen" $listen "admin_listen" $admin) (deepCopy .Values.config) }}
{{- toYaml $cfg }}
{{- end }}

{{/* Selector of the pods that run the gateway container: own pods, or the bot's in sidecar mode. */}}
{{- define "webhook-gateway.podSelector" -}}
{{- if eq .Values.deploymentMode "sidecar" }}
{{- required "sidecar.podSelector (labels of the bot's pods) is required for the metrics Service in sidecar mode" (.Values.sidecar.podSelector | default nil) | toYaml }}
{{- else }}
{{- include "webhook-gateway.selectorLabels" . }}
{{- end }}
{{- end }}

{{- define "webhook-gateway.metricsServiceEnabled" -}}
{{- if or .Values.metricsService.enabled .Values.serviceMonitor.enabled }}true{{ end }}
{{- end }}
