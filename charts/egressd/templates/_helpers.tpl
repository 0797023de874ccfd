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

{{/* controllerConfig is the controller's --config file: the cluster name, the providers map
(each provider's own configuration object as the provider parses it) and the policy prefix
budget, which the agents get as flags. */}}
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
{{- if hasKey $cfg "token" -}}
{{- fail (printf "extraProviders.%s.token: a token in the values ends up in the controller's ConfigMap; put it in a Secret and use plugins.%s.tokenSecret" $name $name) -}}
{{- end -}}
{{- $_ := set $providers $name $cfg -}}
{{- end -}}
{{- range $name, $p := .Values.plugins -}}
{{- include "egressd.checkPlugin" (list $name $p) -}}
{{- $c := dict "type" "plugin" "tokenFile" (printf "%s/%s/token/token" (include "egressd.pluginSecretsDir" $) $name) -}}
{{- if get $p "sidecar" -}}
{{- $_ := set $c "endpoint" (printf "unix://%s/%s.sock" (include "egressd.pluginSocketDir" $) $name) -}}
{{- else -}}
{{- $_ := set $c "endpoint" $p.endpoint -}}
{{- $_ := set $c "caFile" (printf "%s/%s/ca/%s" (include "egressd.pluginSecretsDir" $) $name $p.caFrom.key) -}}
{{- end -}}
{{- $_ := set $providers $name $c -}}
{{- end -}}
{{- $budget := dict "namespace" (int .Values.policyPrefixBudget.namespace) "cluster" (int .Values.policyPrefixBudget.cluster) -}}
{{- dict "clusterName" .Values.clusterName "providers" $providers "policyPrefixBudget" $budget "markMask" .Values.agent.markMask | toYaml -}}
{{- end -}}

{{/* Where the controller pod keeps plugin sockets (an emptyDir shared with the sidecars) and
the plugins' mounted token and CA files. */}}
{{- define "egressd.pluginSocketDir" -}}/run/egressd/plugins{{- end -}}
{{- define "egressd.pluginSecretsDir" -}}/etc/egressd-plugins{{- end -}}

{{/* checkPlugin fails the render on a plugin entry that would be insecure or ambiguous. */}}
{{- define "egressd.checkPlugin" -}}
{{- $name := index . 0 -}}
{{- $p := index . 1 -}}
{{- $tok := get $p "tokenSecret" | default dict -}}
{{- $side := get $p "sidecar" -}}
{{- $ep := get $p "endpoint" -}}
{{- $ca := get $p "caFrom" | default dict -}}
{{- if not (and (get $tok "name") (get $tok "key")) -}}
{{- fail (printf "plugins.%s.tokenSecret: name and key of the Secret holding the plugin's bearer token are required" $name) -}}
{{- end -}}
{{- if and $side $ep -}}
{{- fail (printf "plugins.%s: set sidecar (the plugin runs in the controller pod, on a unix socket) or endpoint (https://), not both" $name) -}}
{{- end -}}
{{- if not $side -}}
{{- if not $ep -}}
{{- fail (printf "plugins.%s: set sidecar (unix socket, the default transport) or endpoint (https://host:port)" $name) -}}
{{- end -}}
{{- if not (hasPrefix "https://" $ep) -}}
{{- fail (printf "plugins.%s.endpoint %s: over TCP the plugin protocol needs TLS (https://); plain HTTP would send the token in clear" $name $ep) -}}
{{- end -}}
{{- if not (and (get $ca "key") (or (get $ca "secret") (get $ca "configMap"))) -}}
{{- fail (printf "plugins.%s.caFrom: the CA that signed the plugin's certificate is required with an https endpoint ({secret: NAME, key: ca.crt} or {configMap: NAME, key: ca.crt})" $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* anySidecar is non-empty when a plugin runs as a sidecar of the controller. */}}
{{- define "egressd.anySidecar" -}}
{{- range $name, $p := .Values.plugins -}}{{- if get $p "sidecar" -}}yes{{- end -}}{{- end -}}
{{- end -}}

{{/*
egressd.agent.holdEstablished: agent.holdEstablished, or the cloud's default: how long an
established connection through a failed gateway waits for its egress IP to land on the next
holder. 60s covers EC2 and GCE moves (seconds); an Azure NIC update typically takes 30-90 s,
with outliers of minutes, so Azure gets 5m (docs/datapath.md, "Connections across a move").
*/}}
{{- define "egressd.agent.holdEstablished" -}}
{{- if .Values.agent.holdEstablished -}}
{{- .Values.agent.holdEstablished -}}
{{- else if eq .Values.provider "azure" -}}
5m0s
{{- else -}}
1m0s
{{- end -}}
{{- end -}}
