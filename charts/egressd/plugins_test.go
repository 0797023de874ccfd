package chart

import (
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/plugin"
)

// pluginConfig renders values and returns the plugin client configuration the controller
// would parse for the provider named name, parsed strictly as the plugin provider does.
func pluginConfig(t *testing.T, r rendered, name string) plugin.Config {
	t.Helper()
	cm := into[corev1.ConfigMap](t, r.get(t, "ConfigMap", controllerName))
	var cfg struct {
		Providers map[string]map[string]any `json:"providers"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatal(err)
	}
	entry, ok := cfg.Providers[name]
	if !ok {
		t.Fatalf("no provider %s in config.yaml:\n%s", name, cm.Data["config.yaml"])
	}
	if entry["type"] != plugin.Type {
		t.Errorf("provider %s has type %v, want %s", name, entry["type"], plugin.Type)
	}
	delete(entry, "type") // the coordinator's, not the provider's
	entry["clusterName"] = "prod-eu"
	raw, err := json.Marshal(entry)
	if err != nil {
		t.Fatal(err)
	}
	var pc plugin.Config
	if err := providers.DecodeConfig(plugin.Type, raw, &pc); err != nil {
		t.Fatalf("the rendered entry does not parse as the plugin provider's configuration: %v", err)
	}
	if strings.Contains(cm.Data["config.yaml"], "s3cret") || pc.Token != "" {
		t.Errorf("a token is in the ConfigMap:\n%s", cm.Data["config.yaml"])
	}
	return pc
}

func container(pod corev1.PodSpec, name string) *corev1.Container {
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	return nil
}

func mountOf(c *corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

func volume(pod corev1.PodSpec, name string) *corev1.Volume {
	for i := range pod.Volumes {
		if pod.Volumes[i].Name == name {
			return &pod.Volumes[i]
		}
	}
	return nil
}

func TestPluginSidecar(t *testing.T) {
	r := mustRender(t, with(profiles["aws"], "plugins", map[string]any{"hetzner": map[string]any{
		"tokenSecret": map[string]any{"name": "hetzner-plugin", "key": "token"},
		"sidecar":     map[string]any{"image": "ghcr.io/acme/egressd-hetzner:1.0", "args": []any{"--verbose"}},
	}}))
	pc := pluginConfig(t, r, "hetzner")
	if pc.Endpoint != "unix:///run/egressd/plugins/hetzner.sock" || pc.TokenFile != "/etc/egressd-plugins/hetzner/token/token" || pc.CAFile != "" {
		t.Errorf("plugin config %+v", pc)
	}
	pod := into[appsv1.Deployment](t, r.get(t, "Deployment", controllerName)).Spec.Template.Spec
	ctl, side := container(pod, "controller"), container(pod, "plugin-hetzner")
	if ctl == nil || side == nil {
		t.Fatalf("containers %v: want controller and plugin-hetzner", pod.Containers)
	}
	// The socket directory is one emptyDir both containers mount at the same path.
	if v := volume(pod, "plugin-sockets"); v == nil || v.EmptyDir == nil {
		t.Errorf("plugin-sockets volume %+v, want an emptyDir", v)
	}
	if mountOf(ctl, "plugin-sockets") != "/run/egressd/plugins" || mountOf(side, "plugin-sockets") != "/run/egressd/plugins" {
		t.Errorf("socket mounts: controller %q, sidecar %q", mountOf(ctl, "plugin-sockets"), mountOf(side, "plugin-sockets"))
	}
	// The controller reads the token from the mounted Secret, the sidecar from its env.
	tv := volume(pod, "plugin-hetzner-token")
	if tv == nil || tv.Secret == nil || tv.Secret.SecretName != "hetzner-plugin" || len(tv.Secret.Items) != 1 || tv.Secret.Items[0].Key != "token" || tv.Secret.Items[0].Path != "token" {
		t.Errorf("token volume %+v", tv)
	}
	if got := mountOf(ctl, "plugin-hetzner-token") + "/token"; got != pc.TokenFile {
		t.Errorf("token mounted at %s, config reads %s", got, pc.TokenFile)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range side.Env {
		env[e.Name] = e
	}
	if env["EGRESSD_PLUGIN_SOCKET"].Value != "/run/egressd/plugins/hetzner.sock" {
		t.Errorf("sidecar socket env %+v", env["EGRESSD_PLUGIN_SOCKET"])
	}
	if ref := env["EGRESSD_PLUGIN_TOKEN"].ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Name != "hetzner-plugin" || ref.SecretKeyRef.Key != "token" {
		t.Errorf("sidecar token env %+v, want a secretKeyRef", env["EGRESSD_PLUGIN_TOKEN"])
	}
	if side.Image != "ghcr.io/acme/egressd-hetzner:1.0" || len(side.Args) != 1 || side.SecurityContext == nil || !*side.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("sidecar %+v", side)
	}
}

func TestPluginOverTLS(t *testing.T) {
	for _, from := range []string{"secret", "configMap"} {
		t.Run(from, func(t *testing.T) {
			r := mustRender(t, with(profiles["aws"], "plugins", map[string]any{"ipam": map[string]any{
				"tokenSecret": map[string]any{"name": "ipam-plugin", "key": "tok"},
				"endpoint":    "https://ipam-plugin.ipam.svc:8443",
				"caFrom":      map[string]any{from: "ipam-ca", "key": "ca.crt"},
			}}))
			pc := pluginConfig(t, r, "ipam")
			if pc.Endpoint != "https://ipam-plugin.ipam.svc:8443" || pc.CAFile != "/etc/egressd-plugins/ipam/ca/ca.crt" || pc.TokenFile != "/etc/egressd-plugins/ipam/token/token" {
				t.Errorf("plugin config %+v", pc)
			}
			pod := into[appsv1.Deployment](t, r.get(t, "Deployment", controllerName)).Spec.Template.Spec
			if len(pod.Containers) != 1 || volume(pod, "plugin-sockets") != nil {
				t.Errorf("a TCP plugin got a sidecar or a socket volume: %d containers", len(pod.Containers))
			}
			ctl := container(pod, "controller")
			if got := mountOf(ctl, "plugin-ipam-ca") + "/ca.crt"; got != pc.CAFile {
				t.Errorf("CA mounted at %s, config reads %s", got, pc.CAFile)
			}
			cv := volume(pod, "plugin-ipam-ca")
			switch {
			case cv == nil:
				t.Fatal("no CA volume")
			case from == "secret" && (cv.Secret == nil || cv.Secret.SecretName != "ipam-ca" || cv.Secret.Items[0].Key != "ca.crt"):
				t.Errorf("CA volume %+v, want Secret ipam-ca", cv)
			case from == "configMap" && (cv.ConfigMap == nil || cv.ConfigMap.Name != "ipam-ca" || cv.ConfigMap.Items[0].Key != "ca.crt"):
				t.Errorf("CA volume %+v, want ConfigMap ipam-ca", cv)
			}
		})
	}
}

func TestPluginValuesRefused(t *testing.T) {
	token := map[string]any{"name": "p", "key": "token"}
	ca := map[string]any{"secret": "ca", "key": "ca.crt"}
	for _, tc := range []struct {
		name   string
		values map[string]any
		err    string
	}{
		{"plain HTTP over TCP", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"tokenSecret": token, "endpoint": "http://p:8080", "caFrom": ca}}), "https"},
		{"no token Secret", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"sidecar": map[string]any{"image": "x"}}}), "tokenSecret"},
		{"an inline token", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"tokenSecret": token, "token": "s3cret", "sidecar": map[string]any{"image": "x"}}}), "token"},
		{"https without a CA", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"tokenSecret": token, "endpoint": "https://p:8443"}}), "caFrom"},
		{"a CA without a source", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"tokenSecret": token, "endpoint": "https://p:8443", "caFrom": map[string]any{"key": "ca.crt"}}}), "caFrom"},
		{"sidecar and endpoint", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"tokenSecret": token, "endpoint": "https://p:8443", "caFrom": ca, "sidecar": map[string]any{"image": "x"}}}), "not both"},
		{"neither sidecar nor endpoint", with(profiles["aws"], "plugins", map[string]any{"p": map[string]any{"tokenSecret": token}}), "set sidecar"},
		{"a token in extraProviders", with(profiles["aws"], "extraProviders", map[string]any{"p": map[string]any{"type": "plugin", "endpoint": "unix:///s", "token": "s3cret"}}), "ConfigMap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := render(t, tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("render: error %v, want one containing %q", err, tc.err)
			}
		})
	}
}
