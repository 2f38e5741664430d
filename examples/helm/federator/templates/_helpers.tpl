{{/*
The hub's namespace is fixed in code (federator_api::names::NAMESPACE): every object of the
hub lives in federator-system. Rendering into another namespace fails here, naming the fix.
*/}}
{{- define "federator.namespace" -}}
{{- if ne .Release.Namespace "federator-system" -}}
{{- fail (printf "the federator hub runs in the namespace federator-system (fixed in federator's code), not %q: install with `-n federator-system --create-namespace`" .Release.Namespace) -}}
{{- end -}}
federator-system
{{- end -}}

{{- define "federator.labels" -}}
app.kubernetes.io/name: federator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: federator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "federator.selectorLabels" -}}
app.kubernetes.io/name: federator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: hub
{{- end -}}

{{- define "federator.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The pod and container security settings of every federator container (as the agent's). */}}
{{- define "federator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "federator.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}
