{{/*
Chart name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "rowcast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources: <release>-<chart>, or the release name
when it already contains the chart name; truncated to 63 characters.
*/}}
{{- define "rowcast.fullname" -}}
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

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "rowcast.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "rowcast.labels" -}}
helm.sh/chart: {{ include "rowcast.chart" . }}
{{ include "rowcast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rowcast
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable for the life of the release.
*/}}
{{- define "rowcast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rowcast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the relay pods. The component label keeps the install
Job's and helm test's pods out of the Deployment, Service and PDB.
*/}}
{{- define "rowcast.relaySelectorLabels" -}}
{{ include "rowcast.selectorLabels" . }}
app.kubernetes.io/component: relay
{{- end }}

{{/*
Name of the relay's ServiceAccount.
*/}}
{{- define "rowcast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rowcast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Relay image reference: registry/repository, then @digest or :tag (the tag
defaults to the chart's appVersion).
*/}}
{{- define "rowcast.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
Image of the helm test pod.
*/}}
{{- define "rowcast.testImage" -}}
{{- $img := .Values.tests.image }}
{{- if $img.registry }}
{{- printf "%s/%s:%s" $img.registry $img.repository ($img.tag | toString) }}
{{- else }}
{{- printf "%s:%s" $img.repository ($img.tag | toString) }}
{{- end }}
{{- end }}

{{/*
Name of the Secret holding the database URL and the JWT key: existingSecret
(the chart creates no Secret; validateValues requires it).
*/}}
{{- define "rowcast.secretName" -}}
{{- .Values.existingSecret }}
{{- end }}

{{/*
Path of the rendered configuration inside the containers.
*/}}
{{- define "rowcast.configPath" -}}
/etc/rowcast/rowcast.yaml
{{- end }}

{{/*
Name of the relay's port that serves /metrics.
*/}}
{{- define "rowcast.metricsPortName" -}}
{{- if .Values.metrics.adminListener.enabled -}}
metrics
{{- else -}}
http
{{- end }}
{{- end }}

{{/*
The rowcast YAML configuration: .Values.config, with listen and admin_listen
set by the chart and without secrets (they come from existingSecret as
environment variables).
*/}}
{{- define "rowcast.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.http)) }}
{{- if .Values.metrics.adminListener.enabled }}
{{- $_ := set $cfg "admin_listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.admin)) }}
{{- else }}
{{- $_ := unset $cfg "admin_listen" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Environment of the containers that run `rowcast serve` or, in the relay
pods, `rowcast install`: the keys of existingSecret that are named, then the
user's extra variables.
*/}}
{{- define "rowcast.env" -}}
{{- $keys := .Values.existingSecretKeys }}
{{- $vars := list (list "ROWCAST_DATABASE_URL" $keys.databaseUrl) (list "ROWCAST_DATABASE_LISTEN_URL" $keys.databaseListenUrl) (list "ROWCAST_AUTH_JWT_SECRET" $keys.jwtSecret) (list "SENTRY_DSN" $keys.sentryDsn) }}
{{- range $vars }}
{{- if index . 1 }}
- name: {{ index . 0 }}
  valueFrom:
    secretKeyRef:
      name: {{ include "rowcast.secretName" $ }}
      key: {{ index . 1 }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Seconds in a Go duration of the simple forms "<n>s" and "<n>m"; empty for
any other form (which is then not checked).
*/}}
{{- define "rowcast.durationSeconds" -}}
{{- $d := toString . | trim }}
{{- if regexMatch "^[0-9]+s$" $d }}
{{- trimSuffix "s" $d }}
{{- else if regexMatch "^[0-9]+m$" $d }}
{{- mul (trimSuffix "m" $d | atoi) 60 }}
{{- end }}
{{- end }}

{{/*
Refuse values that would only fail later, inside the pods.
*/}}
{{- define "rowcast.validateValues" -}}
{{- $msgs := list }}
{{- $cfg := .Values.config | default dict }}
{{- if not $cfg.tables }}
{{- $msgs = append $msgs "config.tables: list at least one table to capture, e.g. --set 'config.tables[0]=escrows'" }}
{{- end }}
{{- if hasKey $cfg "database" }}
{{- $msgs = append $msgs "config.database: do not put database URLs in the ConfigMap; put them in existingSecret (existingSecretKeys.databaseUrl, existingSecretKeys.databaseListenUrl)" }}
{{- end }}
{{- $auth := $cfg.auth | default dict }}
{{- if and (kindIs "map" $auth) (hasKey $auth "jwt_secret") }}
{{- $msgs = append $msgs "config.auth.jwt_secret: do not put the JWT key in the ConfigMap; put it in existingSecret (existingSecretKeys.jwtSecret)" }}
{{- end }}
{{- if and (kindIs "map" $cfg.sentry) (($cfg.sentry | default dict).dsn) }}
{{- $msgs = append $msgs "config.sentry.dsn: do not put the Sentry DSN in the ConfigMap; put it in existingSecret (existingSecretKeys.sentryDsn)" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- $msgs = append $msgs "existingSecret: name the Secret holding the database URL and the JWT key (the chart creates none), e.g. kubectl create secret generic rowcast --from-literal=database-url='postgres://…' --from-literal=jwt-secret=\"$(openssl rand -hex 32)\" and --set existingSecret=rowcast" }}
{{- end }}
{{- if not .Values.existingSecretKeys.databaseUrl }}
{{- $msgs = append $msgs "existingSecretKeys.databaseUrl: name the key of existingSecret holding the database URL" }}
{{- end }}
{{- if and (not .Values.existingSecretKeys.jwtSecret) (not (and (kindIs "map" $auth) (or $auth.jwks_url $auth.public_key_file))) }}
{{- $msgs = append $msgs "existingSecretKeys.jwtSecret: is empty, so set config.auth.jwks_url or config.auth.public_key_file, or tokens cannot be verified" }}
{{- end }}
{{- $shutdown := $cfg.shutdown | default dict }}
{{- $graceText := $shutdown.grace | default "10s" | toString }}
{{- $grace := include "rowcast.durationSeconds" $graceText }}
{{- if and $grace (le (int .Values.terminationGracePeriodSeconds) (atoi $grace)) }}
{{- $msgs = append $msgs (printf "terminationGracePeriodSeconds: %d must be larger than config.shutdown.grace (%s), or pods are killed while draining" (int .Values.terminationGracePeriodSeconds) $graceText) }}
{{- end }}
{{- $drainText := ternary (toString $shutdown.drain) "5s" (hasKey $shutdown "drain") }}
{{- $drain := include "rowcast.durationSeconds" $drainText }}
{{- if and $grace $drain (ge (atoi $drain) (atoi $grace)) }}
{{- $msgs = append $msgs (printf "config.shutdown.drain: %s must be less than config.shutdown.grace (%s), the limit of the whole shutdown" $drainText $graceText) }}
{{- end }}
{{- if $msgs }}
{{- fail (printf "\n\nrowcast: invalid values:\n  - %s\n" (join "\n  - " $msgs)) }}
{{- end }}
{{- end }}

{{/*
Topology spread constraints of the relay pods: topologySpreadConstraints
when set, else one per topologySpread.topologyKeys entry over this release's
relay pods.
*/}}
{{- define "rowcast.topologySpreadConstraints" -}}
{{- if .Values.topologySpreadConstraints }}
{{- tpl (toYaml .Values.topologySpreadConstraints) . }}
{{- else if .Values.topologySpread.enabled }}
{{- range .Values.topologySpread.topologyKeys }}
- maxSkew: {{ $.Values.topologySpread.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $.Values.topologySpread.whenUnsatisfiable }}
  labelSelector:
    matchLabels:
      {{- include "rowcast.relaySelectorLabels" $ | nindent 6 }}
{{- end }}
{{- end }}
{{- end }}
