{{/* Release-scoped name: the release name, or <release>-glm-gateway when it does not say so. */}}
{{- define "glm-gateway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "glm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "glm-gateway.labels" -}}
{{ include "glm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The chart's copy of config/*.yaml with config.files laid over it, as ConfigMap data. */}}
{{- define "glm-gateway.configData" -}}
{{- $files := dict -}}
{{- range $path, $_ := .Files.Glob "config/*.yaml" -}}
{{- $_ := set $files (base $path) ($.Files.Get $path) -}}
{{- end -}}
{{- range $name, $text := .Values.config.files -}}
{{- $_ := set $files $name $text -}}
{{- end -}}
{{- range $name := keys $files | sortAlpha }}
{{ $name }}: |
{{ index $files $name | trimSuffix "\n" | indent 2 }}
{{- end -}}
{{- end -}}

{{/* server.shutdown_grace_s + server.drain_timeout_s from gateway.yaml (defaults 5 and 30),
     rounded up, plus terminationMarginSeconds. */}}
{{- define "glm-gateway.terminationGracePeriodSeconds" -}}
{{- $text := .Files.Get "config/gateway.yaml" -}}
{{- if hasKey .Values.config.files "gateway.yaml" -}}
{{- $text = index .Values.config.files "gateway.yaml" -}}
{{- end -}}
{{- $server := dict -}}
{{- if not .Values.config.existingConfigMap -}}
{{- $server = (fromYaml $text).server | default dict -}}
{{- end -}}
{{- $grace := $server.shutdown_grace_s | default 5.0 -}}
{{- $drain := $server.drain_timeout_s | default 30.0 -}}
{{- add (addf $grace $drain | ceil | int) .Values.terminationMarginSeconds -}}
{{- end -}}

{{/* The name of the Secret the pods read (envFrom), or "" when there is none. */}}
{{- define "glm-gateway.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if include "glm-gateway.secretData" . -}}
{{- printf "%s-keys" (include "glm-gateway.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* stringData of the chart's own Secret (empty with secrets.existingSecret). */}}
{{- define "glm-gateway.secretData" -}}
{{- if not .Values.secrets.existingSecret -}}
{{- with .Values.secrets.masterKey }}
GLM_GATEWAY_MASTER_KEY: {{ . | quote }}
{{- end }}
{{- range $name, $value := .Values.secrets.providerKeys }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- if and (eq .Values.redis.mode "standalone") .Values.redis.url .Values.redis.urlInSecret }}
GLM_GATEWAY_REDIS_URL: {{ .Values.redis.url | quote }}
{{- end }}
{{- with .Values.database.url }}
GLM_GATEWAY_DATABASE_URL: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Refuse value combinations that would start pods that cannot work as asked. */}}
{{- define "glm-gateway.check" -}}
{{- $r := .Values.redis -}}
{{- $existing := .Values.secrets.existingSecret -}}
{{- if and (eq $r.mode "standalone") (not $r.url) (not $existing) -}}
{{- fail "redis.mode=standalone needs redis.url (or secrets.existingSecret holding GLM_GATEWAY_REDIS_URL)" -}}
{{- end -}}
{{- if and (eq $r.mode "standalone") $r.url $r.urlInSecret $existing -}}
{{- fail "redis.url with redis.urlInSecret=true goes into the chart's Secret, but secrets.existingSecret is set: put GLM_GATEWAY_REDIS_URL in that Secret, or set redis.urlInSecret=false" -}}
{{- end -}}
{{- if and (eq $r.mode "sentinel") (not $r.sentinels) -}}
{{- fail "redis.mode=sentinel needs redis.sentinels (host:port,...)" -}}
{{- end -}}
{{- if and (eq $r.mode "cluster") (not $r.clusterNodes) -}}
{{- fail "redis.mode=cluster needs redis.clusterNodes (host:port,...)" -}}
{{- end -}}
{{- if and .Values.database.url $existing -}}
{{- fail "database.url goes into the chart's Secret, but secrets.existingSecret is set: put GLM_GATEWAY_DATABASE_URL in that Secret and leave database.url empty" -}}
{{- end -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.endpoint) -}}
{{- fail "tracing.enabled needs tracing.endpoint (the collector's OTLP/HTTP URL, e.g. http://otel-collector:4318)" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) -}}
{{- fail "autoscaling.maxReplicas is below autoscaling.minReplicas" -}}
{{- end -}}
{{- end -}}
