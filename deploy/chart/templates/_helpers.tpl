{{/* Names and the checks every template relies on. */}}
{{- define "gnc.name" -}}gpu-node-conformance{{- end -}}

{{- define "gnc.labels" -}}
app.kubernetes.io/name: {{ include "gnc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: gpu-node-conformance
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gnc.serviceAccount" -}}
{{- if eq .Values.identity "readonly" -}}gpu-conformance-audit-readonly
{{- else if eq .Values.identity "hosts" -}}gpu-conformance-audit-hosts
{{- else -}}{{ fail (printf "identity=%q: use readonly (no write at all) or hosts (for hostBackend pod)" .Values.identity) }}
{{- end -}}
{{- end -}}

{{- define "gnc.check" -}}
{{- if ne .Release.Namespace "gpu-conformance" -}}
{{ fail (printf "install into the namespace gpu-conformance (helm -n gpu-conformance), not %q: deploy/rbac's identities live there" .Release.Namespace) }}
{{- end -}}
{{- if not (has .Values.hostBackend (list "none" "pod")) -}}
{{ fail (printf "hostBackend=%q: use none (API-only audit) or pod" .Values.hostBackend) }}
{{- end -}}
{{- if and (eq .Values.hostBackend "pod") (ne .Values.identity "hosts") -}}
{{ fail "hostBackend=pod needs identity=hosts: the read-only identity may not create the pod backend's pods or exec into them" }}
{{- end -}}
{{- if not (has .Values.failOn (list "new" "any")) -}}
{{ fail (printf "failOn=%q: use new (only regressions) or any" .Values.failOn) }}
{{- end -}}
{{- if lt (int .Values.keepRuns) 1 -}}
{{ fail "keepRuns must be at least 1: tomorrow's run compares itself with the previous one" }}
{{- end -}}
{{- end -}}

{{- define "gnc.claim" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-reports" .Release.Name) -}}
{{- end -}}

{{/*
deploy/rbac's objects for the chosen identity, read from files/rbac (a link to deploy/rbac: one home for the
RBAC). Only the audit's objects: never the provision identity, never the namespaces.
*/}}
{{- define "gnc.rbac" -}}
{{- $wanted := list "ClusterRole/gpu-conformance-audit" "ClusterRoleBinding/gpu-conformance-audit" "Role/gpu-conformance-audit-release" "RoleBinding/gpu-conformance-audit-release" -}}
{{- $files := list "files/rbac/00-namespaces.yaml" "files/rbac/20-audit.yaml" -}}
{{- if eq .Values.identity "readonly" -}}
{{- $wanted = append $wanted "ServiceAccount/gpu-conformance-audit-readonly" -}}
{{- else -}}
{{- $files = append $files "files/rbac/25-audit-hosts.yaml" -}}
{{- $wanted = concat $wanted (list "ServiceAccount/gpu-conformance-audit-hosts" "Role/gpu-conformance-audit-hosts" "RoleBinding/gpu-conformance-audit-hosts" "ClusterRoleBinding/gpu-conformance-audit-hosts" "RoleBinding/gpu-conformance-audit-hosts-release") -}}
{{- end -}}
{{- $found := list -}}
{{- range $file := $files -}}
{{- $text := $.Files.Get $file -}}
{{- if not $text -}}{{ fail (printf "%s is missing from the chart (it links to deploy/rbac)" $file) }}{{- end -}}
{{- range $doc := regexSplit "(?m)^---[ \t]*$" $text -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if and $obj $obj.kind -}}
{{- $key := printf "%s/%s" $obj.kind $obj.metadata.name -}}
{{- if has $key $wanted }}
{{- $found = append $found $key }}
---
{{ toYaml $obj }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $key := $wanted -}}
{{- if not (has $key $found) -}}{{ fail (printf "%s is not in deploy/rbac" $key) }}{{- end -}}
{{- end -}}
{{- end -}}
