{{/* Chart name, or nameOverride. */}}
{{- define "guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: fullnameOverride, or release-chart (just the release when it contains the chart name). */}}
{{- define "guard.fullname" -}}
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

{{/* Labels that select the pods; never change them after the first install. */}}
{{- define "guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "guard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "guard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deliverability-guard
{{- end }}

{{- define "guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "guard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the guard reads its rules: the rules ConfigMap, mounted as a directory. */}}
{{- define "guard.rulesDir" -}}
/etc/guard/rules
{{- end }}

{{/* The rules ConfigMap's data: the chart's files/rules/*.yaml|yml, replaced by rules.inline
     when set, or with rules.inline added (same file name: the inline one) under rules.keepShipped. */}}
{{- define "guard.rulesData" -}}
{{- $data := dict }}
{{- if or (not .Values.rules.inline) .Values.rules.keepShipped }}
{{- range $path, $unused := .Files.Glob "files/rules/*.{yaml,yml}" }}
{{- $_ := set $data (base $path) ($.Files.Get $path) }}
{{- end }}
{{- end }}
{{- range $name, $text := .Values.rules.inline }}
{{- $_ := set $data $name $text }}
{{- end }}
{{- if not $data }}
{{- fail "no rules: set rules.inline or keep the chart's files/rules/*.yaml" }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/* The Secret holding the Leadterra API key, and its key; empty in dry run without a key. */}}
{{- define "guard.apiKeySecretName" -}}
{{- if .Values.leadterra.existingSecret }}
{{- .Values.leadterra.existingSecret }}
{{- else if .Values.leadterra.apiKey }}
{{- printf "%s-leadterra" (include "guard.fullname" .) }}
{{- end }}
{{- end }}

{{- define "guard.apiKeySecretKey" -}}
{{- if .Values.leadterra.existingSecret }}
{{- .Values.leadterra.existingSecretKey }}
{{- else }}
{{- "api-key" }}
{{- end }}
{{- end }}

{{/* Settings the guard itself would reject at start-up, refused at install time instead. */}}
{{- define "guard.validate" -}}
{{- if and (not .Values.guard.dryRun) (not (include "guard.apiKeySecretName" .)) (not .Values.leadterra.workspaceKeysSecret) }}
{{- fail "leadterra.existingSecret (or leadterra.apiKey, or leadterra.workspaceKeysSecret) is required unless guard.dryRun=true: without a key the guard cannot pause anything" }}
{{- end }}
{{- $kafka := .Values.kafka }}
{{- if hasPrefix "SASL" $kafka.securityProtocol }}
{{- if not (and $kafka.sasl.mechanism $kafka.sasl.username $kafka.sasl.passwordSecret.name) }}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.mechanism, kafka.sasl.username and kafka.sasl.passwordSecret.name" $kafka.securityProtocol) }}
{{- end }}
{{- end }}
{{- if and $kafka.tls.secretName (not (hasSuffix "SSL" $kafka.securityProtocol)) }}
{{- fail (printf "kafka.tls.secretName is set but kafka.securityProtocol=%s does not use TLS (use SSL or SASL_SSL)" $kafka.securityProtocol) }}
{{- end }}
{{- if and $kafka.tls.clientAuth (not $kafka.tls.secretName) }}
{{- fail "kafka.tls.clientAuth needs kafka.tls.secretName (the Secret with the client certificate and key)" }}
{{- end }}
{{- end }}
