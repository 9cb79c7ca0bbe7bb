{{- define "swell.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "swell.labels" -}}
app.kubernetes.io/name: swell
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "swell.selectorLabels" -}}
app.kubernetes.io/name: swell
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The labels the operator puts on the bundled worker's pods (swell_operator.deployment.pool_labels). */}}
{{- define "swell.workerSelectorLabels" -}}
app.kubernetes.io/name: swell-worker
app.kubernetes.io/managed-by: swell-operator
{{- end -}}

{{- define "swell.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "swell.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The permissions the operator needs in a namespace it manages; shared by the Role and the ClusterRole. */}}
{{- define "swell.rules" -}}
- apiGroups: ["swell.dev"]
  resources: ["workerpools"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["swell.dev"]
  resources: ["workerpools/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "update", "patch"]
# pods: list to find a pool's workers, patch to set controller.kubernetes.io/pod-deletion-cost.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "patch"]
# services: the Service in front of a Pub/Sub push pool's workers (created, then kept in shape).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
# secrets: read the Secrets a WorkerPool references (Redis URL, password). Names are the user's, so
# resourceNames cannot be fixed here; with watchNamespaces the grant is limited to those namespaces.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}

{{/* Only when watching every namespace: kopf watches CRDs to notice the WorkerPool CRD being upgraded.
A cluster-wide kopf does not list namespaces, so no namespace rights. A namespaced install grants neither:
kopf then scans CRDs once at start (it logs that it cannot watch them) and takes the namespaces as given. */}}
{{- define "swell.clusterwideRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end -}}
