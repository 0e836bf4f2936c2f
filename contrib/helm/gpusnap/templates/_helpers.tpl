{{/* Chart name, or nameOverride. */}}
{{- define "gpusnap.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of object names: fullnameOverride, else the release name when it
already contains the chart name ("gpusnap" for a release named gpusnap, as
in contrib/kubernetes), else release-chart.
*/}}
{{- define "gpusnap.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "gpusnap.labels" -}}
app.kubernetes.io/name: {{ include "gpusnap.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector (and pod template) labels of the DaemonSet. */}}
{{- define "gpusnap.nodeSelectorLabels" -}}
app.kubernetes.io/name: {{ include "gpusnap.name" . }}
app.kubernetes.io/component: node
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gpusnap.serviceAccountName" -}}
{{ include "gpusnap.fullname" . }}-node
{{- end }}

{{- define "gpusnap.storeClaimName" -}}
{{- if eq .Values.store.type "existingClaim" }}
{{- required "store.existingClaim is required with store.type=existingClaim" .Values.store.existingClaim }}
{{- else }}
{{- include "gpusnap.fullname" . }}-store
{{- end }}
{{- end }}

{{/* Whether the DaemonSet mounts the store (nfs or existingClaim). */}}
{{- define "gpusnap.mountsStore" -}}
{{- if has .Values.store.type (list "nfs" "existingClaim") }}true{{ end }}
{{- end }}

{{/* image reference from {repository, tag}. */}}
{{- define "gpusnap.image" -}}
{{- printf "%s:%s" .repository (toString .tag) }}
{{- end }}

{{/*
One installer --handler argument:
name=NAME,store=...,restore=...,auto_checkpoint=...,control_dir=...,<options>
Empty values are left out; options follow in key order; a list value (for
ignore_env) is joined with ':'. Refuses what the installer would refuse.
Called with (dict "h" HANDLER "root" $).
*/}}
{{- define "gpusnap.handlerArg" -}}
{{- $h := .h }}
{{- $root := .root }}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString $h.name)) }}
{{- fail (printf "handlers: name %q must be a DNS label (lowercase letters, digits and '-', at most 63), as a RuntimeClass handler is" (toString $h.name)) }}
{{- end }}
{{- $pairs := list (list "store" $h.store) (list "restore" $h.restore) (list "auto_checkpoint" $h.autoCheckpoint) (list "control_dir" $h.controlDir) }}
{{- range $k, $v := ($h.options | default dict) }}
{{- if has $k (list "name" "store" "restore" "auto_checkpoint" "control_dir") }}
{{- fail (printf "handler %q: set %s with its own key, not in options" $h.name $k) }}
{{- end }}
{{- $pairs = append $pairs (list $k $v) }}
{{- end }}
{{- $parts := list (printf "name=%s" $h.name) }}
{{- range $pairs }}
{{- $v := index . 1 }}
{{- if kindIs "slice" $v }}{{ $v = join ":" $v }}{{ end }}
{{- $v = toString (default "" $v) }}
{{- if $v }}
{{- if contains "," $v }}
{{- fail (printf "handler %q: %s value %q contains ',', which the installer's --handler cannot carry" $h.name (index . 0) $v) }}
{{- end }}
{{- $parts = append $parts (printf "%s=%s" (index . 0) $v) }}
{{- end }}
{{- end }}
{{- if and (include "gpusnap.mountsStore" $root) $h.store }}
{{- $base := trimSuffix "/" $root.Values.store.hostPath }}
{{- if not (or (eq (trimSuffix "/" (toString $h.store)) $base) (hasPrefix (printf "%s/" $base) (toString $h.store))) }}
{{- fail (printf "handler %q: store %q is not store.hostPath (%s) or below it, where the DaemonSet mounts the store; the shim would use the node's local disk" $h.name (toString $h.store) $root.Values.store.hostPath) }}
{{- end }}
{{- end }}
{{- printf "--handler=%s" (join "," $parts) }}
{{- end }}
