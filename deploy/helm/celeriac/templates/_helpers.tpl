{{- define "celeriac.fullname" -}}
{{ .Release.Name }}-celeriac
{{- end -}}

{{- define "celeriac.workerName" -}}
{{ include "celeriac.fullname" . }}-worker
{{- end -}}

{{- define "celeriac.scalerName" -}}
{{ include "celeriac.fullname" . }}-scaler
{{- end -}}

{{- define "celeriac.targetName" -}}
{{ default (include "celeriac.workerName" .) .Values.scaler.target.name }}
{{- end -}}

{{- define "celeriac.labels" -}}
app.kubernetes.io/part-of: celeriac
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
