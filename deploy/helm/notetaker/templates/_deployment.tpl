{{/*
The Deployment of one notetaker service; every service is rendered from this one template.
Context: (dict "root" $ "name" <service key> "svc" <its values>).
*/}}
{{- define "notetaker.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $svc := .svc -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "notetaker.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "notetaker.componentLabels" . | nindent 4 }}
spec:
  {{- /* Under KEDA the ScaledObject owns the replica count. */}}
  {{- if not (include "notetaker.kedaScaled" .) }}
  replicas: {{ $svc.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "notetaker.componentSelectorLabels" . | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "notetaker.componentSelectorLabels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- /* A settings change rolls the pods. */}}
        checksum/config: {{ include "notetaker.configData" . | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "notetaker.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $v.serviceAccount.automountServiceAccountToken }}
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds | default 30 }}
      containers:
        - name: {{ .name }}
          image: {{ include "notetaker.image" . | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: http
              containerPort: {{ $svc.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "notetaker.componentName" . }}
          {{- $secretEnv := merge (dict) ($svc.secretEnv | default dict) ($v.secretEnv | default dict) }}
          {{- with $secretEnv }}
          env:
            {{- include "notetaker.secretEnv" . | trim | nindent 12 }}
          {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.probes.startup | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $v.probes.readiness | nindent 12 }}
          resources:
            {{- required (printf "services.%s.resources is required" .name) $svc.resources | toYaml | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $v.tmpSizeLimit }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        {{- $constraint := deepCopy . }}
        {{- /* Without its own selector a constraint spreads this service's pods. */}}
        {{- if not $constraint.labelSelector }}
        {{- $selector := include "notetaker.componentSelectorLabels" $ | fromYaml }}
        {{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
        {{- end }}
        {{- toYaml (list $constraint) | nindent 8 }}
        {{- end }}
      {{- end }}
{{- end }}
