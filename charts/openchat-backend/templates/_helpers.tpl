{{/* Names. */}}
{{- define "openchat-backend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openchat-backend.fullname" -}}
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

{{- define "openchat-backend.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openchat-backend.labels" -}}
helm.sh/chart: {{ include "openchat-backend.chart" . }}
{{ include "openchat-backend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "openchat-backend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "openchat-backend.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "openchat-backend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "openchat-backend.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "openchat-backend.gatewayName" -}}
{{- default (printf "%s-gateway" (include "openchat-backend.fullname" .)) .Values.gateway.gateway.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openchat-backend.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The chart's own Secret (join-ticket secret, and the Postgres URL when given in values). */}}
{{- define "openchat-backend.secretName" -}}
{{- printf "%s-secrets" (include "openchat-backend.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "openchat-backend.usesPostgres" -}}
{{- if or .Values.database.existingSecret .Values.database.url }}true{{ end }}
{{- end }}

{{/* Whole CPUs of resources.limits.cpu ("2", 2, "2000m"); fails on a fraction. */}}
{{- define "openchat-backend.cpuCount" -}}
{{- $raw := toString (required "resources.limits.cpu is required: the media shards get one whole core each" .Values.resources.limits.cpu) }}
{{- if regexMatch "^[0-9]+m$" $raw }}
{{- $milli := trimSuffix "m" $raw | int }}
{{- if or (ne (mod $milli 1000) 0) (lt $milli 1000) }}
{{- fail (printf "resources.limits.cpu %s is not a whole number of CPUs: Guaranteed QoS with integer CPUs gives each media shard its own core" $raw) }}
{{- end }}
{{- div $milli 1000 }}
{{- else if regexMatch "^[1-9][0-9]*$" $raw }}
{{- $raw }}
{{- else }}
{{- fail (printf "resources.limits.cpu %s is not a whole number of CPUs: Guaranteed QoS with integer CPUs gives each media shard its own core" $raw) }}
{{- end }}
{{- end }}

{{/* Media shards: media.shards, or one per whole CPU of the limit. */}}
{{- define "openchat-backend.shards" -}}
{{- $cpus := include "openchat-backend.cpuCount" . | int }}
{{- if eq (toString .Values.media.shards) "" }}
{{- $cpus }}
{{- else }}
{{- $shards := int .Values.media.shards }}
{{- if or (lt $shards 1) (gt $shards $cpus) }}
{{- fail (printf "media.shards %v must be between 1 and the CPU limit (%d): each shard is pinned to a core of its own" .Values.media.shards $cpus) }}
{{- end }}
{{- $shards }}
{{- end }}
{{- end }}

{{/* Every combination the chart refuses, with the reason. Included by the Deployment. */}}
{{- define "openchat-backend.validate" -}}
{{- $postgres := include "openchat-backend.usesPostgres" . }}
{{- $several := or (gt (int .Values.replicaCount) 1) (and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1)) }}
{{- $nats := or .Values.cluster.nats.existingSecret .Values.cluster.nats.url }}
{{- if and $several (not $postgres) }}
{{- fail "replicaCount > 1 (or autoscaling) needs Postgres and NATS: set database.existingSecret (or database.url) and cluster.nats.existingSecret (or cluster.nats.url). The embedded SQLite store lives on one pod's volume and cannot be shared between replicas." }}
{{- end }}
{{- if and $several (not $nats) }}
{{- fail "replicaCount > 1 (or autoscaling) needs Postgres and NATS: set cluster.nats.existingSecret (or cluster.nats.url) as well as database.existingSecret. Without NATS each pod keeps its own realtime fan-out and clients on different pods never see each other." }}
{{- end }}
{{- if and $nats (lt (int .Values.terminationGracePeriodSeconds) (add (int .Values.cluster.drainSeconds) 10)) }}
{{- fail (printf "terminationGracePeriodSeconds %d must be at least cluster.drainSeconds + 10 (%d): a pod keeps its calls for the drain, then needs time to close them" (int .Values.terminationGracePeriodSeconds) (add (int .Values.cluster.drainSeconds) 10)) }}
{{- end }}
{{- if and $nats (not $postgres) }}
{{- fail "cluster.nats needs Postgres: set database.existingSecret (or database.url); openchatd refuses OPENCHAT_NATS_URL with the embedded store." }}
{{- end }}
{{- if and $several .Values.persistence.enabled (not .Values.persistence.existingClaim) (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}
{{- fail "replicaCount > 1 (or autoscaling) with persistence needs persistence.accessModes [ReadWriteMany]: every pod reads and writes the uploaded files in the data directory." }}
{{- end }}
{{- if and $several (not .Values.media.hostNetwork) }}
{{- fail "replicaCount > 1 (or autoscaling) needs media.hostNetwork=true: a UDP Service shared by several pods sends a call's media to pods that do not hold its room." }}
{{- end }}
{{- if .Values.guaranteedQoS }}
{{- $r := .Values.resources }}
{{- if or (ne (toString $r.requests.cpu) (toString $r.limits.cpu)) (ne (toString $r.requests.memory) (toString $r.limits.memory)) }}
{{- fail (printf "guaranteedQoS: resources.requests (cpu %v, memory %v) must equal resources.limits (cpu %v, memory %v) for Guaranteed QoS and exclusive cores" $r.requests.cpu $r.requests.memory $r.limits.cpu $r.limits.memory) }}
{{- end }}
{{- end }}
{{- $shards := include "openchat-backend.shards" . | int }}
{{- $base := int .Values.media.portBase }}
{{- $last := add $base $shards -1 }}
{{- if or (lt $base 1024) (gt $last 65535) }}
{{- fail (printf "media.portBase %d: the media ports %d-%d must lie within 1024-65535" $base $base $last) }}
{{- end }}
{{- if and (not .Values.media.hostNetwork) (eq .Values.media.service.type "NodePort") (or (lt $base 30000) (gt $last 32767)) }}
{{- fail (printf "media.service.type NodePort: the media ports %d-%d are the node ports clients reach, so they must lie in the node-port range 30000-32767 (set media.portBase)" $base $last) }}
{{- end }}
{{- if and (not .Values.media.hostNetwork) (eq .Values.media.service.type "LoadBalancer") (not .Values.media.publicIP) }}
{{- fail "media.service.type LoadBalancer needs media.publicIP: clients must be sent to the balancer's address, not a node's" }}
{{- end }}
{{- if and .Values.media.hostNetwork (le $base (int .Values.containerPort)) (ge $last (int .Values.containerPort)) }}
{{- fail (printf "media ports %d-%d overlap containerPort %d" $base $last (int .Values.containerPort)) }}
{{- end }}
{{- range $key := list "OPENCHAT_HTTP_ADDR" "OPENCHAT_DATA_DIR" "OPENCHAT_SHARDS" "OPENCHAT_MEDIA_PORT_BASE" "OPENCHAT_MEDIA_PUBLIC_IP" "OPENCHAT_DATABASE_URL" "OPENCHAT_JOIN_TICKET_SECRET" "OPENCHAT_NATS_URL" "OPENCHAT_NODE_ID" "OPENCHAT_DRAIN_SECONDS" }}
{{- if hasKey $.Values.env $key }}
{{- fail (printf "env.%s is set by the chart: use %s instead" $key (get (dict "OPENCHAT_HTTP_ADDR" "containerPort" "OPENCHAT_DATA_DIR" "persistence.mountPath" "OPENCHAT_SHARDS" "media.shards" "OPENCHAT_MEDIA_PORT_BASE" "media.portBase" "OPENCHAT_MEDIA_PUBLIC_IP" "media.publicIP" "OPENCHAT_DATABASE_URL" "database.existingSecret" "OPENCHAT_JOIN_TICKET_SECRET" "joinTicket.existingSecret" "OPENCHAT_NATS_URL" "cluster.nats.existingSecret" "OPENCHAT_NODE_ID" "the pod name (set by the chart)" "OPENCHAT_DRAIN_SECONDS" "cluster.drainSeconds") $key)) }}
{{- end }}
{{- end }}
{{- if and (eq .Values.seccomp.type "Localhost") (not .Values.seccomp.localhostProfile) }}
{{- fail "seccomp.type Localhost needs seccomp.localhostProfile (the path of files/seccomp-io-uring.json under the kubelet's seccomp directory)" }}
{{- end }}
{{- end }}
