{{/*
Non-secret settings of one service (or the toolbox, which has no port): what every service
shares, then the service's own `config` (rendered with tpl, so a value may reference other
values). Context: (dict "root" "name" "svc").
*/}}
{{- define "notetaker.configData" -}}
{{- $v := .root.Values -}}
NOTETAKER_SERVICE_NAME: {{ .name | quote }}
{{- with .svc.port }}
NOTETAKER_HTTP_PORT: {{ . | toString | quote }}
{{- end }}
NOTETAKER_LOG_LEVEL: {{ $v.log.level | quote }}
NOTETAKER_LOG_FORMAT: {{ $v.log.format | quote }}
NOTETAKER_KAFKA_BOOTSTRAP_SERVERS: {{ required "kafka.bootstrapServers is required" $v.kafka.bootstrapServers | quote }}
NOTETAKER_KAFKA_IDEMPOTENCE: {{ $v.kafka.idempotence | toString | quote }}
NOTETAKER_KAFKA_TOPIC_PARTITIONS: {{ $v.kafka.topicPartitions | toString | quote }}
NOTETAKER_KAFKA_REPLICATION_FACTOR: {{ $v.kafka.replicationFactor | toString | quote }}
NOTETAKER_KAFKA_EVENT_RETENTION_MS: {{ include "notetaker.number" $v.kafka.eventRetentionMs | quote }}
NOTETAKER_KAFKA_DEAD_LETTER_RETENTION_MS: {{ include "notetaker.number" $v.kafka.deadLetterRetentionMs | quote }}
{{- /* An empty endpoint is left unset: the S3 client then talks to AWS itself. */}}
{{- with $v.s3.endpointUrl }}
NOTETAKER_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
NOTETAKER_S3_REGION: {{ $v.s3.region | quote }}
NOTETAKER_S3_BUCKET: {{ required "s3.bucket is required" $v.s3.bucket | quote }}
NOTETAKER_MEDIA_RETENTION_DAYS: {{ $v.retention.defaultDays | int | toString | quote }}
NOTETAKER_S3_LIFECYCLE_EXPIRATION_DAYS: {{ $v.retention.lifecycleSafetyNetDays | int | toString | quote }}
{{- range $env, $value := .svc.config }}
{{ $env }}: {{ tpl (toString $value) $.root | quote }}
{{- end }}
{{- end }}
