{{/*
Names, labels and small pieces shared by every template.
Per-service templates take a context dict: (dict "root" $ "name" <service key> "svc" <its values>).
*/}}

{{/* Chart name, overridable. */}}
{{- define "notetaker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's resources: <release>-<chart> unless the release already says it. */}}
{{- define "notetaker.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "notetaker.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the release's pods (stable across upgrades). */}}
{{- define "notetaker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "notetaker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Kubernetes recommended labels of every resource. */}}
{{- define "notetaker.labels" -}}
helm.sh/chart: {{ include "notetaker.chart" . }}
{{ include "notetaker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: notetaker
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Name of one service's resources: <fullname>-<service>. Context: (dict "root" "name"). */}}
{{- define "notetaker.componentName" -}}
{{- printf "%s-%s" (include "notetaker.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of one service's resources. */}}
{{- define "notetaker.componentLabels" -}}
{{ include "notetaker.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* Selector of one service's pods. */}}
{{- define "notetaker.componentSelectorLabels" -}}
{{ include "notetaker.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{/* The ServiceAccount the services run as. */}}
{{- define "notetaker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "notetaker.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference of one service: [registry/]repository:tag. Context: (dict "root" "svc"). */}}
{{- define "notetaker.image" -}}
{{- $root := .root }}
{{- $tag := .svc.image.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- $registry := $root.Values.image.registry | trimSuffix "/" }}
{{- if $registry }}
{{- printf "%s/%s:%s" $registry .svc.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .svc.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Env entries for secret settings: each NOTETAKER_* name read from a key of an existing Secret.
The chart never sees a secret value. Argument: a map of env name -> {secretName, key, optional}.
*/}}
{{- define "notetaker.secretEnv" -}}
{{- range $env, $ref := . }}
{{- if $ref }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "secretEnv.%s.secretName is required" $env) $ref.secretName }}
      key: {{ required (printf "secretEnv.%s.key is required" $env) $ref.key }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether KEDA scales this service: keda.enabled and the service lists consumers.
Renders "true" or nothing. Context: (dict "root" "svc").
*/}}
{{- define "notetaker.kedaScaled" -}}
{{- if and .root.Values.keda.enabled .svc.scaling .svc.scaling.consumers }}true{{ end }}
{{- end }}

{{/* The fewest replicas the service runs with. Context: (dict "root" "svc"). */}}
{{- define "notetaker.minReplicas" -}}
{{- if include "notetaker.kedaScaled" . }}
{{- .svc.scaling.minReplicas | default 1 | int }}
{{- else }}
{{- .svc.replicas | default 1 | int }}
{{- end }}
{{- end }}

{{/*
A number as PromQL and people write it: 1000000 stays 1000000 (Helm would print 1e+06), 0.1 stays 0.1.
*/}}
{{- define "notetaker.number" -}}
{{- $n := float64 . }}
{{- if eq $n (floor $n) }}{{ int64 $n }}{{ else }}{{ $n }}{{ end }}
{{- end }}
