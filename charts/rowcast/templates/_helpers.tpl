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
Name of the Secret holding the database URL and the JWT secret.
*/}}
{{- define "rowcast.secretName" -}}
{{- default (include "rowcast.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
Key of the database URL in that Secret.
*/}}
{{- define "rowcast.secretKey.databaseUrl" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecretKeys.databaseUrl }}
{{- else -}}
database-url
{{- end }}
{{- end }}

{{/*
Key of the JWT secret in that Secret.
*/}}
{{- define "rowcast.secretKey.jwtSecret" -}}
{{- if .Values.existingSecret }}
{{- .Values.existingSecretKeys.jwtSecret }}
{{- else -}}
jwt-secret
{{- end }}
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
set by the chart and without secrets (they come from the Secret as
environment variables).
*/}}
{{- define "rowcast.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := unset $cfg "database" }}
{{- if kindIs "map" $cfg.auth }}
{{- $_ := unset $cfg.auth "jwt_secret" }}
{{- end }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.http)) }}
{{- if .Values.metrics.adminListener.enabled }}
{{- $_ := set $cfg "admin_listen" (printf "0.0.0.0:%d" (int .Values.containerPorts.admin)) }}
{{- else }}
{{- $_ := unset $cfg "admin_listen" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
Environment of every container that runs rowcast: the secrets, then the
user's extra variables.
*/}}
{{- define "rowcast.env" -}}
- name: ROWCAST_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "rowcast.secretName" . }}
      key: {{ include "rowcast.secretKey.databaseUrl" . }}
- name: ROWCAST_AUTH_JWT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "rowcast.secretName" . }}
      key: {{ include "rowcast.secretKey.jwtSecret" . }}
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
{{- $msgs = append $msgs "config.database: do not put the database URL in the ConfigMap; set databaseUrl (or existingSecret)" }}
{{- end }}
{{- if and (kindIs "map" $cfg.auth) (hasKey ($cfg.auth | default dict) "jwt_secret") }}
{{- $msgs = append $msgs "config.auth.jwt_secret: do not put the JWT secret in the ConfigMap; set jwtSecret (or existingSecret)" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- if not .Values.databaseUrl }}
{{- $msgs = append $msgs "databaseUrl: set the PostgreSQL URL, or name a Secret holding it in existingSecret" }}
{{- end }}
{{- if not .Values.jwtSecret }}
{{- $msgs = append $msgs "jwtSecret: set an HS256 key of at least 32 bytes (openssl rand -hex 32), or name a Secret holding it in existingSecret" }}
{{- else if lt (len (toString .Values.jwtSecret)) 32 }}
{{- $msgs = append $msgs (printf "jwtSecret: is %d bytes; HS256 needs at least 32" (len (toString .Values.jwtSecret))) }}
{{- end }}
{{- end }}
{{- $graceText := (($cfg.shutdown | default dict).grace) | default "10s" | toString }}
{{- $grace := include "rowcast.durationSeconds" $graceText }}
{{- if and $grace (le (int .Values.terminationGracePeriodSeconds) (atoi $grace)) }}
{{- $msgs = append $msgs (printf "terminationGracePeriodSeconds: %d must be larger than config.shutdown.grace (%s), or pods are killed while draining" (int .Values.terminationGracePeriodSeconds) $graceText) }}
{{- end }}
{{- if $msgs }}
{{- fail (printf "\n\nrowcast: invalid values:\n  - %s\n" (join "\n  - " $msgs)) }}
{{- end }}
{{- end }}
