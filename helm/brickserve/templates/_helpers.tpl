{{/* Chart name, overridable. */}}
{{- define "brickserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, prefixed with the chart name unless it already contains it. */}}
{{- define "brickserve.fullname" -}}
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

{{- define "brickserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels on every object. */}}
{{- define "brickserve.labels" -}}
helm.sh/chart: {{ include "brickserve.chart" . }}
{{ include "brickserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: brickserve
{{- end }}

{{/* Selector labels: stable across upgrades (Deployment selectors are immutable). */}}
{{- define "brickserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "brickserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "brickserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "brickserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "brickserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/* Where the config files are mounted, and the server config file passed to --config. */}}
{{- define "brickserve.configDir" -}}/etc/brickserve{{- end }}
{{- define "brickserve.configFile" -}}{{ include "brickserve.configDir" . }}/server.textproto{{- end }}

{{/* The model directory the server loads. */}}
{{- define "brickserve.modelPath" -}}
{{- $sub := trimAll "/" .Values.model.subPath }}
{{- if $sub }}{{ printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) $sub }}{{ else }}{{ .Values.model.mountPath }}{{ end }}
{{- end }}

{{/* The admin token Secret's mount (bricksAdmin) and the file the server reads the token from. */}}
{{- define "brickserve.adminTokenDir" -}}/etc/brickserve-admin{{- end }}
{{- define "brickserve.adminTokenFile" -}}{{ include "brickserve.adminTokenDir" . }}/{{ .Values.bricksAdmin.secretKey }}{{- end }}

{{- define "brickserve.modelClaimName" -}}
{{- .Values.model.pvc.existingClaim | default (printf "%s-model" (include "brickserve.fullname" .)) }}
{{- end }}

{{/*
Protobuf text format of a map of ServerConfig fields: strings quoted, whole numbers as integers
(Helm reads YAML numbers as float64, which would print 4194304 as 4.194304e+06), fractions as
written (core_guard_max_relative_delta: 0.5), lists of strings as repeated fields (brick_roots),
maps as nested messages.
Skipped: null (an unset optional field) and 0 (the server's default either way).
*/}}
{{- define "brickserve.textproto" -}}
{{- $pad := .indent | default "" }}
{{- range $key, $value := .fields }}
{{- if kindIs "map" $value }}
{{ $pad }}{{ $key }} {
{{- include "brickserve.textproto" (dict "fields" $value "indent" (printf "%s  " $pad)) }}
{{ $pad }}}
{{- else if kindIs "slice" $value }}
{{- range $item := $value }}
{{ $pad }}{{ $key }}: {{ $item | quote }}
{{- end }}
{{- else if kindIs "string" $value }}
{{ $pad }}{{ $key }}: {{ $value | quote }}
{{- else if kindIs "bool" $value }}
{{ $pad }}{{ $key }}: {{ $value }}
{{- else if or (kindIs "float64" $value) (kindIs "int" $value) (kindIs "int64" $value) }}
{{- if ne ($value | int64 | float64) ($value | float64) }}
{{ $pad }}{{ $key }}: {{ $value }}
{{- else if ne ($value | int64) 0 }}
{{ $pad }}{{ $key }}: {{ $value | int64 }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The whole server config: the fields the chart owns (admin_token_file from bricksAdmin, brick_dir
from brickVolume.watch), then config.serverConfig, then the start-up bricks, one
`bricks { name path sha256 }` message each.
*/}}
{{- define "brickserve.serverConfig" -}}
{{- $owned := dict
  "model" (include "brickserve.modelPath" .)
  "listen" (printf "0.0.0.0:%d" (.Values.service.grpcPort | int))
  "metrics_listen" (printf "0.0.0.0:%d" (.Values.service.metricsPort | int))
  "device" (ternary "cuda" "cpu" .Values.gpu.enabled) }}
{{- if .Values.bricksAdmin.existingSecret }}
{{- $_ := set $owned "admin_token_file" (include "brickserve.adminTokenFile" .) }}
{{- end }}
{{- if and .Values.brickVolume.enabled .Values.brickVolume.watch }}
{{- $_ := set $owned "brick_dir" .Values.brickVolume.mountPath }}
{{- end -}}
# brickserve.v1.ServerConfig (proto/brickserve/v1/server_config.proto), rendered by the Helm chart.
{{- include "brickserve.textproto" (dict "fields" $owned) }}
{{- include "brickserve.textproto" (dict "fields" (omit .Values.config.serverConfig "model" "listen" "metrics_listen" "device" "admin_token_file" "bricks" "brick_dir")) }}
{{- with .Values.config.serverConfig.brick_dir }}
{{- if not (hasKey $owned "brick_dir") }}
brick_dir: {{ . | quote }}
{{- end }}
{{- end }}
{{- range .Values.bricks }}
bricks {
  name: {{ .name | quote }}
  path: {{ .path | quote }}
  {{- with .sha256 }}
  sha256: {{ . | quote }}
  {{- end }}
}
{{- end }}
{{- end }}

{{/* Combinations the schema cannot express; each fails with the value to change. */}}
{{- define "brickserve.validate" -}}
{{- $m := .Values.model }}
{{- if and (eq $m.source "pvc") (not $m.pvc.existingClaim) (not $m.pvc.create) }}
{{- fail "model.source=pvc needs model.pvc.existingClaim (a claim holding the model) or model.pvc.create=true" }}
{{- end }}
{{- if and (eq $m.source "hostPath") (not $m.hostPath.path) }}
{{- fail "model.source=hostPath needs model.hostPath.path (the model directory on the node)" }}
{{- end }}
{{- if and (eq $m.source "image") (not $m.image.repository) }}
{{- fail "model.source=image needs model.image.repository (an image holding the model under model.image.path)" }}
{{- end }}
{{- if eq (.Values.service.grpcPort | int) (.Values.service.metricsPort | int) }}
{{- fail (printf "service.grpcPort and service.metricsPort are both %d; the server needs two ports" (.Values.service.grpcPort | int)) }}
{{- end }}
{{- $grace := .Values.config.serverConfig.shutdown_grace_s | default 5 | int }}
{{- $needed := add $grace (.Values.lifecycle.preStopSleepSeconds | int) }}
{{- if le (.Values.terminationGracePeriodSeconds | int) $needed }}
{{- fail (printf "terminationGracePeriodSeconds=%d must exceed config.serverConfig.shutdown_grace_s (%d) + lifecycle.preStopSleepSeconds (%d), or the kubelet kills the server mid-drain" (.Values.terminationGracePeriodSeconds | int) $grace (.Values.lifecycle.preStopSleepSeconds | int)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (.Values.autoscaling.minReplicas | int) (.Values.autoscaling.maxReplicas | int)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- $seen := dict }}
{{- range $i, $b := .Values.bricks }}
{{- if hasKey $seen $b.name }}
{{- fail (printf "bricks[%d].name %q is listed twice (also bricks[%d]); brick names must be unique" $i $b.name (get $seen $b.name)) }}
{{- end }}
{{- $_ := set $seen $b.name $i }}
{{- end }}
{{- $bv := .Values.brickVolume }}
{{- if $bv.enabled }}
{{- if not $bv.existingClaim }}
{{- fail "brickVolume.enabled needs brickVolume.existingClaim (a claim holding the brick directories)" }}
{{- end }}
{{- if and $bv.watch .Values.config.serverConfig.brick_dir }}
{{- fail (printf "config.serverConfig.brick_dir=%q and brickVolume.watch=true both name the watched directory; with brickVolume.watch the chart sets brick_dir to brickVolume.mountPath (%s): unset one" .Values.config.serverConfig.brick_dir $bv.mountPath) }}
{{- end }}
{{- $taken := dict (trimSuffix "/" $m.mountPath) "model.mountPath" (include "brickserve.configDir" .) "the config mount" "/tmp" "the /tmp emptyDir" (include "brickserve.adminTokenDir" .) "the admin token mount" }}
{{- with get $taken (trimSuffix "/" $bv.mountPath) }}
{{- fail (printf "brickVolume.mountPath %s is already %s; pick another directory" $bv.mountPath .) }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- fail "podDisruptionBudget needs exactly one of minAvailable and maxUnavailable (set the other to null)" }}
{{- end }}
{{- end }}
