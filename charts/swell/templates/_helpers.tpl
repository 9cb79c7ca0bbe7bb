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

{{/* The permissions the operator needs in a namespace it manages; shared by the Role and the ClusterRole.
Each verb is one the code calls (grep the API calls in operator/swell_operator and kopf's own); tests/chart
proves both the grants and their absence with `kubectl auth can-i`. */}}
{{- define "swell.rules" -}}
# workerpools: kopf lists and watches them and patches its finalizer and progress annotations; the
# activator patches its wake-up annotation. Nothing reads one pool by name, so no get.
- apiGroups: ["swell.dev"]
  resources: ["workerpools"]
  verbs: ["list", "watch", "patch"]
# workerpools/status: merge patches only (status.write_status).
- apiGroups: ["swell.dev"]
  resources: ["workerpools/status"]
  verbs: ["patch"]
# workerpools/finalizers: the Deployment's ownerReference has blockOwnerDeletion, which clusters with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) allow only with this grant.
- apiGroups: ["swell.dev"]
  resources: ["workerpools/finalizers"]
  verbs: ["update"]
# deployments: get (replicas, and the resourceVersion a server-side apply is guarded by), patch (server-side
# apply, field manager swell), create (an apply that creates needs it). Never delete: owner references do that.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "create", "patch"]
# deployments/scale: the scaler's one write to replicas.
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# pods: list to find a pool's workers (in-flight per pod, metrics), patch to set the pod-deletion-cost.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# services: the Service in front of a Pub/Sub push pool's workers (created, then kept in shape).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch"]
# secrets: read the Secrets a WorkerPool references (Redis URL, password). Names are the user's, so
# resourceNames cannot be fixed here; with watchNamespaces the grant is limited to those namespaces.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# A target another scaler already scales is refused (double_scaling.py): list the HPAs and KEDA's ScaledObjects.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list"]
# events: kopf posts core/v1 Events (kopf.event); it never patches or reads them.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* Only when watching every namespace: kopf watches CRDs to notice the WorkerPool CRD being upgraded.
A cluster-wide kopf does not list namespaces, so no namespace rights. A namespaced install grants neither:
kopf then scans CRDs once at start (it logs that it cannot watch them) and takes the namespaces as given. */}}
{{- define "swell.clusterwideRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
