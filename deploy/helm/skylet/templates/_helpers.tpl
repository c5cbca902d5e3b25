{{- define "skylet.name" -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- define "skylet.nodeName" -}}{{ default (include "skylet.name" .) .Values.nodeName }}{{- end -}}
{{- define "skylet.serviceAccount" -}}{{ default (include "skylet.name" .) .Values.serviceAccount.name }}{{- end -}}
{{- define "skylet.labels" -}}
app.kubernetes.io/name: skylet
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "skylet.selector" -}}
app.kubernetes.io/name: skylet
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "skylet.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}
