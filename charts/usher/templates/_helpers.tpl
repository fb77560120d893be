{{- define "usher.labels" -}}
app.kubernetes.io/name: usher-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "usher.selector" -}}
app.kubernetes.io/name: usher-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
