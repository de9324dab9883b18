{{- define "llmrouter.labels" -}}
app.kubernetes.io/name: llmrouter
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}
{{- define "llmrouter.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}
