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
{{- if .Values.spool.enabled }}
{{- /* the spool database on the mounted volume, spelt out so `check` and readers see where it is */}}
{{- $spool := deepCopy ($cfg.spool | default dict) }}
{{- $_ := set $spool "path" (include "webhook-gateway.spoolPath" .) }}
{{- $_ := set $cfg "spool" $spool }}
{{- end }}
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
{{- if or .Values.metricsService.enabled .Values.serviceMonitor.enabled (and .Values.spool.enabled (eq .Values.deploymentMode "standalone")) }}true{{ end }}
{{- end }}

{{/* Where the spool volume is mounted; the spool database must be a file directly in it. */}}
{{- define "webhook-gateway.spoolDir" -}}
/var/lib/webhook-gateway
{{- end }}

{{/* The spool database path in the rendered config (the gateway's default unless config.spool.path). */}}
{{- define "webhook-gateway.spoolPath" -}}
{{- $spool := .Values.config.spool | default dict }}
{{- $spool.path | default (printf "%s/spool.db" (include "webhook-gateway.spoolDir" .)) }}
{{- end }}

{{/* true when the config makes the gateway open a spool: a `spool:` section or a `delivery: spool` route. */}}
{{- define "webhook-gateway.spoolWanted" -}}
{{- $wanted := hasKey .Values.config "spool" }}
{{- range .Values.config.routes }}
{{- if eq (toString (.delivery | default "")) "spool" }}{{ $wanted = true }}{{ end }}
{{- end }}
{{- if $wanted }}true{{ end }}
{{- end }}

{{/* The PVC a sidecar's spool volume mounts: spool.existingClaim, or the one this chart renders. */}}
{{- define "webhook-gateway.spoolClaimName" -}}
{{- .Values.spool.existingClaim | default (printf "%s-spool" (include "webhook-gateway.fullname" .)) }}
{{- end }}

{{/* shutdown_timeout of the config in whole seconds (rounded up), as the gateway parses it. */}}
{{- define "webhook-gateway.shutdownSeconds" -}}
{{- $raw := .Values.config.shutdown_timeout | default 20 }}
{{- if kindIs "string" $raw }}
{{- $m := regexFindAll "^([0-9]+(?:\\.[0-9]+)?)(ms|s|m|h|d)$" $raw -1 }}
{{- if not $m }}{{ fail (printf "config.shutdown_timeout %q is not a duration (10s, 1m)" $raw) }}{{ end }}
{{- $num := regexReplaceAll "(ms|s|m|h|d)$" $raw "" | float64 }}
{{- $unit := regexFind "(ms|s|m|h|d)$" $raw }}
{{- $mult := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0) $unit }}
{{- mulf $num $mult | ceil | int }}
{{- else }}
{{- $raw | float64 | ceil | int }}
{{- end }}
{{- end }}

{{/* Refuse values that would run the spool somewhere it cannot work. */}}
{{- define "webhook-gateway.validateSpool" -}}
{{- $dir := include "webhook-gateway.spoolDir" . }}
{{- if .Values.spool.enabled }}
{{- $path := include "webhook-gateway.spoolPath" . }}
{{- if ne (dir $path) $dir }}
{{- fail (printf "config.spool.path %q must be a file directly in %s, where the spool volume is mounted" $path $dir) }}
{{- end }}
{{- if and (eq .Values.deploymentMode "standalone") (not (hasKey .Values.podSecurityContext "fsGroup")) }}
{{- fail "spool.enabled needs podSecurityContext.fsGroup (10001) so the non-root gateway can write to the volume" }}
{{- end }}
{{- else if include "webhook-gateway.spoolWanted" . }}
{{- fail "config uses the spool (a spool: section or a delivery: spool route) but spool.enabled is false: the root filesystem is read-only, set spool.enabled=true for a persistent volume" }}
{{- end }}
{{- end }}
