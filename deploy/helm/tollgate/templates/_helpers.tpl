{{/* Chart name, or nameOverride. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name for every object; the release name alone when it already holds the chart's. */}}
{{- define "tollgate.fullname" -}}
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

{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Postgres URL is set (as a value or a Secret reference). */}}
{{- define "tollgate.hasDatabase" -}}
{{- if or .Values.database.url.value .Values.database.url.existingSecret }}true{{ end }}
{{- end }}

{{/* "redis" when a Redis URL is set, else "local": the limits.backend of the config. */}}
{{- define "tollgate.limitsBackend" -}}
{{- if or .Values.redis.url.value .Values.redis.url.existingSecret }}redis{{ else }}local{{ end }}
{{- end }}

{{/*
The secrets the chart stores itself: those given as `value` without an existingSecret,
as a map from Secret key to value.
*/}}
{{- define "tollgate.ownSecretData" -}}
{{- $data := dict }}
{{- range $ref := list .Values.adminKey .Values.upstream.apiKey .Values.database.url .Values.redis.url }}
{{- if and $ref.value (not $ref.existingSecret) }}
{{- $_ := set $data $ref.key $ref.value }}
{{- end }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
The env entries read from Secrets, one per secret given (value or existingSecret):
the admin key, the upstream key, the database and Redis URLs.
*/}}
{{- define "tollgate.secretEnv" -}}
{{- $root := . }}
{{- $refs := list
  (list "TOLLGATE_ADMIN_KEY" .Values.adminKey)
  (list .Values.upstream.apiKeyEnv .Values.upstream.apiKey)
  (list "TOLLGATE_DATABASE_URL" .Values.database.url)
  (list "TOLLGATE_REDIS_URL" .Values.redis.url) }}
{{- range $pair := $refs }}
{{- $env := index $pair 0 }}
{{- $ref := index $pair 1 }}
{{- if or $ref.value $ref.existingSecret }}
- name: {{ required "upstream.apiKeyEnv must name the env var of the upstream key" $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.existingSecret | default (include "tollgate.fullname" $root) }}
      key: {{ required (printf "a Secret key name is required for %s" $env) $ref.key }}
{{- end }}
{{- end }}
{{- end }}

{{/* Refuse settings that would lose or split the ledger. */}}
{{- define "tollgate.validate" -}}
{{- $replicasMayExceedOne := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $replicasMayExceedOne (not (include "tollgate.hasDatabase" .)) }}
{{- fail "tollgate: more than one replica (replicaCount > 1 or autoscaling.enabled) needs database.url: the SQLite ledger is one pod's file" }}
{{- end }}
{{- if and $replicasMayExceedOne .Values.persistence.enabled }}
{{- fail "tollgate: persistence.enabled gives every replica the same claim, but each tollgate process needs a spill directory of its own: turn persistence off (an emptyDir per pod) or run one replica" }}
{{- end }}
{{- $config := tpl .Values.config . }}
{{- $backend := include "tollgate.limitsBackend" . }}
{{- if not (regexMatch (printf "(?m)^\\s*backend\\s*=\\s*\"%s\"" $backend) $config) }}
{{- fail (printf "tollgate: config must set limits.backend = \"%s\" (keep the line the default config has)" $backend) }}
{{- end }}
{{- end }}
