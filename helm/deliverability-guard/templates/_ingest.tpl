{{/* `guard ingest`: names, labels and checks. Its pods carry their own name label, so no
selector of the guard's (Deployment, Service, PDB, NetworkPolicy) ever matches them. */}}
{{- define "guard.ingest.fullname" -}}
{{- printf "%s-ingest" (include "guard.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "guard.ingest.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-ingest" (include "guard.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: ingest
{{- end }}

{{- define "guard.ingest.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "guard.ingest.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deliverability-guard
{{- end }}

{{/* The Secret with the webhook signing secret (and ARF token): existing, or the chart's own. */}}
{{- define "guard.ingest.secretName" -}}
{{- if .Values.ingest.webhookSecret.existingSecret }}
{{- .Values.ingest.webhookSecret.existingSecret }}
{{- else }}
{{- include "guard.ingest.fullname" . }}
{{- end }}
{{- end }}

{{- define "guard.ingest.secretKey" -}}
{{- if .Values.ingest.webhookSecret.existingSecret }}
{{- .Values.ingest.webhookSecret.existingSecretKey }}
{{- else }}
{{- "webhook-secret" }}
{{- end }}
{{- end }}

{{/* The key of the ARF bearer token in that Secret; empty: the ARF route is off. */}}
{{- define "guard.ingest.arfKey" -}}
{{- if .Values.ingest.webhookSecret.existingSecret }}
{{- .Values.ingest.arf.existingSecretKey }}
{{- else if .Values.ingest.arf.token }}
{{- "arf-token" }}
{{- end }}
{{- end }}

{{/* The key of the campaigns' own webhook secrets in that Secret; empty: none. */}}
{{- define "guard.ingest.campaignSecretsKey" -}}
{{- if .Values.ingest.webhookSecret.existingSecret }}
{{- .Values.ingest.webhookSecret.campaignSecretsKey }}
{{- end }}
{{- end }}

{{- define "guard.ingest.validate" -}}
{{- if not (or .Values.ingest.webhookSecret.existingSecret (trim .Values.ingest.webhookSecret.value)) }}
{{- fail "ingest.webhookSecret.existingSecret (or ingest.webhookSecret.value) is required with ingest.enabled: unsigned webhooks are refused" }}
{{- end }}
{{- if and .Values.ingest.webhookSecret.campaignSecretsKey (not .Values.ingest.webhookSecret.existingSecret) }}
{{- fail "ingest.webhookSecret.campaignSecretsKey names a key of ingest.webhookSecret.existingSecret, which is not set" }}
{{- end }}
{{- if and .Values.ingest.ingress.enabled (not .Values.ingest.ingress.tlsSecretName) }}
{{- fail "ingest.ingress.tlsSecretName is required with ingest.ingress.enabled: Leadterra posts to HTTPS URLs only" }}
{{- end }}
{{- end }}
