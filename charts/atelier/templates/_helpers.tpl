{{/* Names, labels and the pieces every per-service template shares. */}}

{{- define "atelier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide name; per-service objects append the service name (truncated to 63). */}}
{{- define "atelier.fullname" -}}
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

{{- define "atelier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Called with (dict "root" $ "name" <component>). */}}
{{- define "atelier.componentName" -}}
{{- printf "%s-%s" (include "atelier.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "atelier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "atelier.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "atelier.labels" -}}
helm.sh/chart: {{ include "atelier.chart" .root }}
{{ include "atelier.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: atelier
{{- end }}

{{/* The gRPC service each one serves: the same table as atelier.runtime.registry.GRPC_SERVICES
     (a test keeps them equal). Readiness asks health for this name: SERVING once loaded. */}}
{{- define "atelier.grpcService" -}}
{{- $names := dict
  "generation" "atelier.generation.v1.GenerationService"
  "body" "atelier.body.v1.BodyService"
  "nesting" "atelier.nesting.v1.NestingService"
  "inspection" "atelier.inspection.v1.InspectionService"
  "trends" "atelier.trends.v1.TrendsService"
  "recommendations" "atelier.recommendations.v1.RecommendationsService" -}}
{{- get $names .name -}}
{{- end }}

{{/* Image of a service: its own repository/tag, else the chart's; tag defaults to appVersion. */}}
{{- define "atelier.image" -}}
{{- $repo := dig "image" "repository" "" .svc | default .root.Values.image.repository -}}
{{- $tag := dig "image" "tag" "" .svc | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- if .root.Values.global.imageRegistry -}}
{{- printf "%s/%s:%s" .root.Values.global.imageRegistry $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end }}

{{- define "atelier.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- include "atelier.componentName" . -}}
{{- else -}}
default
{{- end -}}
{{- end }}

{{/* Does this service create Kubernetes Jobs? (jobs.runner=kubernetes and listed in jobs.services) */}}
{{- define "atelier.createsJobs" -}}
{{- if and (eq .root.Values.jobs.runner "kubernetes") (has .name .root.Values.jobs.services) -}}true{{- end -}}
{{- end }}

{{- define "atelier.databaseSecret" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else if .Values.database.url -}}
{{- printf "%s-database" (include "atelier.fullname" .) -}}
{{- end -}}
{{- end }}

{{- define "atelier.tlsSecret" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "atelier.fullname" .)) -}}
{{- end }}

{{/* The CA whose client certificates mTLS accepts: its own Secret, or the TLS Secret's ca.crt. */}}
{{- define "atelier.clientCaFile" -}}
{{- if .Values.tls.clientAuth.caSecretName -}}
/etc/atelier/client-ca/ca.crt
{{- else -}}
/etc/atelier/tls/ca.crt
{{- end -}}
{{- end }}

{{/* A probe on the gRPC health protocol. Kubernetes' native grpc probe speaks plaintext only,
     so with TLS the probe runs a short Python health check inside the container instead. */}}
{{- define "atelier.probe" -}}
{{- if and .root.Values.tls.enabled .root.Values.tls.clientAuth.enabled -}}
{{- /* mTLS: a probe has no client certificate; the plaintext port serving health only. */ -}}
grpc:
  port: {{ .root.Values.tls.clientAuth.healthPort }}
  service: {{ .service | quote }}
timeoutSeconds: 2
{{- else if .root.Values.tls.enabled -}}
exec:
  command:
    - python
    - -c
    - |
      import sys, grpc
      from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g
      d = "/etc/atelier/tls/"
      try: ca = open(d + "ca.crt", "rb").read()
      except OSError: ca = open(d + "tls.crt", "rb").read()
      ch = grpc.secure_channel("127.0.0.1:{{ .port }}", grpc.ssl_channel_credentials(ca),
                               options=[("grpc.ssl_target_name_override", "{{ .host }}")])
      r = g.HealthStub(ch).Check(h.HealthCheckRequest(service="{{ .service }}"), timeout=4)
      sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)
timeoutSeconds: 5
{{- else -}}
grpc:
  port: {{ .port }}
  service: {{ .service | quote }}
timeoutSeconds: 2
{{- end }}
{{- end }}
