{{/* Names. Everything is prefixed with the release so two releases never collide. */}}
{{- define "egressd.fullname" -}}
{{- if contains "egressd" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-egressd" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "egressd.controller.fullname" -}}{{ include "egressd.fullname" . }}-controller{{- end -}}
{{- define "egressd.agent.fullname" -}}{{ include "egressd.fullname" . }}-agent{{- end -}}

{{- define "egressd.controller.serviceAccountName" -}}
{{- default (include "egressd.controller.fullname" .) .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- define "egressd.agent.serviceAccountName" -}}
{{- default (include "egressd.agent.fullname" .) .Values.agent.serviceAccount.name -}}
{{- end -}}

{{- define "egressd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: egressd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "egressd.controller.selectorLabels" -}}
app.kubernetes.io/name: egressd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}
{{- define "egressd.agent.selectorLabels" -}}
app.kubernetes.io/name: egressd
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: agent
{{- end -}}

{{/* image renders repository:tag or repository@digest; the tag defaults to appVersion. */}}
{{- define "egressd.image" -}}
{{- $img := index . 0 -}}{{- $root := index . 1 -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}

{{/* controllerConfig is the controller's --config file: the cluster name and the providers map,
each provider's own configuration object as the provider parses it. */}}
{{- define "egressd.controllerConfig" -}}
{{- $providers := dict -}}
{{- if eq .Values.provider "aws" -}}
{{- $c := dict "region" .Values.aws.region -}}
{{- with .Values.aws.vpcID }}{{ $_ := set $c "vpcID" . }}{{ end -}}
{{- $_ := set $providers "aws" $c -}}
{{- else if eq .Values.provider "gcp" -}}
{{- $_ := set $providers "gcp" (dict "project" .Values.gcp.project) -}}
{{- else if eq .Values.provider "azure" -}}
{{- $_ := set $providers "azure" (dict "subscriptionID" .Values.azure.subscriptionID "resourceGroup" .Values.azure.resourceGroup) -}}
{{- end -}}
{{- /* provider static: no entry. Static pools belong to each EgressGateway
(spec.addresses.static), and the controller refuses a provider named or of type static. */ -}}
{{- range $name, $cfg := .Values.extraProviders -}}
{{- $_ := set $providers $name $cfg -}}
{{- end -}}
{{- dict "clusterName" .Values.clusterName "providers" $providers | toYaml -}}
{{- end -}}
