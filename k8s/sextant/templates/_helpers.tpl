{{/* vim: set filetype=mustache: */}}

{{/* Chart name. */}}
{{- define "sextant.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: resource name prefix, at most 63 characters. */}}
{{- define "sextant.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one service role's resources: <fullname>-<service>. Call with (dict "root" $ "name" $name). */}}
{{- define "sextant.componentName" -}}
{{- $full := include "sextant.fullname" .root | trunc (int (sub 62 (len .name))) | trimSuffix "-" -}}
{{- printf "%s-%s" $full .name -}}
{{- end -}}

{{- define "sextant.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "sextant.labels" -}}
helm.sh/chart: {{ include "sextant.chart" . }}
{{ include "sextant.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sextant
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the whole release (every role). */}}
{{- define "sextant.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sextant.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component. Call with (dict "root" $ "name" $name). */}}
{{- define "sextant.componentLabels" -}}
{{ include "sextant.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "sextant.componentSelectorLabels" -}}
{{ include "sextant.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "sextant.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sextant.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sextant.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret the pods read (the chart's or auth.existingSecret). */}}
{{- define "sextant.secretName" -}}
{{- default (include "sextant.fullname" .) .Values.auth.existingSecret -}}
{{- end -}}

{{/*
One service's effective settings: serviceDefaults with the entry layered on top (maps merged
one level deep; `false`/0 in the entry win, unlike sprig's merge). Returns YAML; call with
(dict "root" $ "name" $name "cfg" $cfg) and parse with fromYaml.
*/}}
{{- define "sextant.serviceConfig" -}}
{{- $out := deepCopy .root.Values.serviceDefaults -}}
{{- range $k, $v := .cfg -}}
{{- $d := get $out $k -}}
{{- if and (kindIs "map" $v) (kindIs "map" $d) -}}
{{- $inner := deepCopy $d -}}
{{- range $k2, $v2 := $v -}}
{{- $_ := set $inner $k2 $v2 -}}
{{- end -}}
{{- $_ := set $out $k $inner -}}
{{- else -}}
{{- $_ := set $out $k $v -}}
{{- end -}}
{{- end -}}
{{- $_ := set $out "name" .name -}}
{{- if not (get $out "role") -}}
{{- $_ := set $out "role" .name -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* NATS URLs: bus.servers, else the in-release NATS sub-chart's Service. */}}
{{- define "sextant.natsServers" -}}
{{- if .Values.bus.servers -}}
{{- toJson .Values.bus.servers -}}
{{- else if .Values.nats.enabled -}}
{{- $natsName := "" -}}
{{- if .Values.nats.fullnameOverride -}}
{{- $natsName = .Values.nats.fullnameOverride -}}
{{- else if contains "nats" .Release.Name -}}
{{- $natsName = .Release.Name -}}
{{- else -}}
{{- $natsName = printf "%s-nats" .Release.Name -}}
{{- end -}}
{{- list (printf "nats://%s.%s.svc:4222" ($natsName | trunc 63 | trimSuffix "-") .Release.Namespace) | toJson -}}
{{- else -}}
{{- required "bus.servers is required (or set nats.enabled=true)" nil -}}
[]
{{- end -}}
{{- end -}}

{{/*
The config file (TOML). Strings and lists are rendered with toJson: JSON strings and arrays of
strings are valid TOML. Numbers go through int64 (Helm reads YAML numbers as float64).
*/}}
{{- define "sextant.configToml" -}}
# Rendered by the sextant Helm chart ({{ include "sextant.chart" . }}). Roles, listen addresses
# and the data dir come from command-line flags; secrets from SEXTANT_* environment variables.
shutdown_grace_secs = {{ .Values.shutdownGraceSecs | int64 }}

[bus]
kind = "jetstream"
servers = {{ include "sextant.natsServers" . }}
stream_replicas = {{ .Values.bus.streamReplicas | int64 }}
max_age_secs = {{ .Values.bus.maxAgeSecs | int64 }}
max_bytes = {{ .Values.bus.maxBytes | int64 }}
publish_timeout_ms = {{ .Values.bus.publishTimeoutMs | int64 }}
{{- if .Values.bus.credentials.existingSecret }}
credentials_file = {{ printf "/etc/sextant/nats/%s" .Values.bus.credentials.key | toJson }}
{{- end }}
{{- include "sextant.tomlExtra" .Values.bus.extra }}

[storage]
kind = "scylla"
{{- if not .Values.storage.contactPoints }}{{ required "storage.contactPoints is required" nil }}{{ end }}
contact_points = {{ .Values.storage.contactPoints | default (list) | toJson }}
local_datacenter = {{ required "storage.localDatacenter is required" .Values.storage.localDatacenter | default "" | toJson }}
keyspace = {{ .Values.storage.keyspace | toJson }}
run_ttl_secs = {{ .Values.storage.runTtlSecs | int64 }}
{{- include "sextant.tomlExtra" .Values.storage.extra }}

[storage.replication]
strategy = {{ .Values.storage.replication.strategy | toJson }}
{{- if eq .Values.storage.replication.strategy "SimpleStrategy" }}
replication_factor = {{ .Values.storage.replication.replicationFactor | default 1 | int64 }}
{{- else if not .Values.storage.replication.datacenters }}
{{- required "storage.replication.datacenters is required with NetworkTopologyStrategy, e.g. {\"eu-west-1\": 3}" nil }}
{{- end }}

{{- with .Values.storage.replication.datacenters }}

[storage.replication.datacenters]
{{- range $dc, $rf := . }}
{{ $dc | toJson }} = {{ $rf | int64 }}
{{- end }}
{{- end }}
{{- with .Values.limits }}

[limits]
{{- range $k, $v := . }}
{{ $k }} = {{ $v | int64 }}
{{- end }}
{{- end }}

[log]
format = {{ .Values.log.format | toJson }}
filter = {{ .Values.log.filter | toJson }}
{{- with .Values.extraConfig }}

# extraConfig
{{ . }}
{{- end }}
{{- end -}}

{{/*
API keys in the inline syntax SEXTANT_AUTH__API_KEYS takes:
[{name="a",hash="sha256:...",tenant="..."}]. Validates each entry.
*/}}
{{- define "sextant.apiKeysInline" -}}
{{- $items := list -}}
{{- range $i, $k := .Values.auth.apiKeys -}}
{{- if not (and $k.name $k.hash $k.tenant) -}}
{{- fail (printf "auth.apiKeys[%d]: name, hash and tenant are required" $i) -}}
{{- end -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" $k.hash) -}}
{{- fail (printf "auth.apiKeys[%d] (%s): hash must be sha256:<64 hex digits>, as printed by `sextant hash-key <key>`" $i $k.name) -}}
{{- end -}}
{{- if not (regexMatch "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$" $k.tenant) -}}
{{- fail (printf "auth.apiKeys[%d] (%s): tenant must be a UUID" $i $k.name) -}}
{{- end -}}
{{- $items = append $items (printf "{name=%s,hash=%s,tenant=%s}" ($k.name | toJson) ($k.hash | toJson) ($k.tenant | toJson)) -}}
{{- end -}}
{{- printf "[%s]" (join "," $items) -}}
{{- end -}}

{{/* The signing key: auth.signingKey, else the one already in the release's Secret, else a new one. */}}
{{- define "sextant.signingKey" -}}
{{- if .Values.auth.signingKey -}}
{{- if not (regexMatch "^[0-9a-fA-F]{64}$" .Values.auth.signingKey) -}}
{{- fail "auth.signingKey must be 64 hex digits (openssl rand -hex 32)" -}}
{{- end -}}
{{- .Values.auth.signingKey -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "sextant.fullname" .) -}}
{{- if and $existing $existing.data (index $existing.data "signing-key") -}}
{{- index $existing.data "signing-key" | b64dec -}}
{{- else -}}
{{- randAlphaNum 64 | sha256sum -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment every sextant container gets: secrets from the Secret. */}}
{{- define "sextant.secretEnv" -}}
{{- $secret := include "sextant.secretName" . -}}
{{- $keys := .Values.auth.existingSecretKeys -}}
{{- $own := not .Values.auth.existingSecret -}}
{{- if or (not $own) .Values.auth.apiKeys }}
- name: SEXTANT_AUTH__API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "api-keys" $keys.apiKeys $own }}
      {{- if .Values.auth.allowOpenMode }}
      optional: true
      {{- end }}
{{- end }}
- name: SEXTANT_AUTH__SIGNING_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "signing-key" $keys.signingKey $own }}
{{- if or (not $own) .Values.storage.username }}
- name: SEXTANT_STORAGE__USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "scylla-username" $keys.storageUsername $own }}
      optional: true
- name: SEXTANT_STORAGE__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ ternary "scylla-password" $keys.storagePassword $own }}
      optional: true
{{- end }}
{{- end -}}

{{/* Fails the render when no API key source is configured and open mode is not allowed. */}}
{{- define "sextant.validate" -}}
{{- if and (not .Values.auth.existingSecret) (not .Values.auth.apiKeys) (not .Values.auth.allowOpenMode) -}}
{{- required "auth.apiKeys (or auth.existingSecret) is required; set auth.allowOpenMode=true to run without API keys (never in production)" nil -}}
{{- end -}}
{{- if or (lt (int .Values.bus.streamReplicas) 1) (gt (int .Values.bus.streamReplicas) 5) -}}
{{- fail "bus.streamReplicas must be between 1 and 5 (JetStream's limit)" -}}
{{- end -}}
{{- if not (has .Values.log.format (list "json" "text")) -}}
{{- fail "log.format must be json or text" -}}
{{- end -}}
{{- end -}}

{{/* Scheduling for one service: its own settings, else the global ones. Call with (dict "root" $ "svc" $svc). */}}
{{- define "sextant.scheduling" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- with (default $root.Values.nodeSelector $svc.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "sextant.affinity" (dict "root" $root "affinity" (default $root.Values.affinity $svc.affinity)) | trim }}
affinity:
  {{- . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.tolerations $svc.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $root.Values.topologySpreadConstraints $svc.topologySpreadConstraints) }}
topologySpreadConstraints:
  {{- range . }}
  {{- $c := deepCopy . }}
  {{- if not $c.labelSelector }}
  {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "sextant.componentSelectorLabels" (dict "root" $root "name" $svc.name) | fromYaml)) }}
  {{- end }}
  - {{ toYaml $c | indent 4 | trim }}
  {{- end }}
{{- end }}
{{- with (default $root.Values.priorityClassName $svc.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* terminationGracePeriodSeconds: must exceed preStop sleep + shutdown_grace_secs. */}}
{{- define "sextant.terminationGrace" -}}
{{- if .Values.lifecycle.terminationGracePeriodSeconds -}}
{{- .Values.lifecycle.terminationGracePeriodSeconds | int64 -}}
{{- else -}}
{{- add (.Values.lifecycle.preStopSleepSeconds | int64) (.Values.shutdownGraceSecs | int64) 10 -}}
{{- end -}}
{{- end -}}

{{/*
Checksum of the chart's Secret for the pods' checksum/secret annotation. A generated signing key
is left out: it is stable across upgrades (looked up) and must not roll the pods.
*/}}
{{- define "sextant.secretChecksum" -}}
{{- list (include "sextant.apiKeysInline" .) .Values.auth.signingKey .Values.storage.username .Values.storage.password | toJson | sha256sum -}}
{{- end -}}

{{/*
Affinity: the given one, plus the region pinning node affinity when regionPinning.regions is
set and the given affinity has no nodeAffinity of its own (which then wins). Call with
(dict "root" $ "affinity" $affinity); returns YAML (empty for none).
*/}}
{{- define "sextant.affinity" -}}
{{- $aff := deepCopy (default (dict) .affinity) -}}
{{- $regions := .root.Values.regionPinning.regions -}}
{{- if and $regions (not $aff.nodeAffinity) -}}
{{- $expr := dict "key" .root.Values.regionPinning.topologyKey "operator" "In" "values" $regions -}}
{{- $term := dict "matchExpressions" (list $expr) -}}
{{- $_ := set $aff "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list $term))) -}}
{{- end -}}
{{- if $aff -}}
{{- toYaml $aff -}}
{{- end -}}
{{- end -}}

{{/* Extra `key = value` lines for a TOML table from a map of scalars (bus.extra, storage.extra). */}}
{{- define "sextant.tomlExtra" -}}
{{- range $k, $v := . }}
{{- if not (regexMatch "^[a-z][a-z0-9_]*$" $k) }}
{{- fail (printf "extra config key %q: use the snake_case TOML key" $k) }}
{{- end }}
{{- if kindIs "string" $v }}
{{ $k }} = {{ $v | toJson }}
{{- else if kindIs "bool" $v }}
{{ $k }} = {{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "int64" $v) (kindIs "int" $v) }}
{{ $k }} = {{ $v | int64 }}
{{- else }}
{{- fail (printf "extra config key %q: only strings, numbers and booleans" $k) }}
{{- end }}
{{- end }}
{{- end -}}
