package plugin

import (
	"context"

	"github.com/egressd/egressd/providers"
)

// Config is the plugin client's JSON configuration. It lives in the controller's ConfigMap,
// so it names where the token is (a mounted Secret file, or an environment variable the
// Deployment fills from a Secret), never the token itself.
type Config struct {
	// ClusterName is the cluster this provider works for (the coordinator sets it from its
	// own clusterName).
	ClusterName string `json:"clusterName" config:"required"`
	// Endpoint is the plugin server: unix:///path/to.sock (a sidecar; the default the chart
	// renders) or https://host:port. Plain http:// is refused: the token would cross the
	// network in clear.
	Endpoint string `json:"endpoint" config:"required"`
	// TokenFile is a file holding the bearer token, such as a mounted Secret's key. It is
	// read on every call, so a rotated Secret takes effect without a restart.
	TokenFile string `json:"tokenFile,omitempty"`
	// TokenEnv names an environment variable holding the bearer token (env valueFrom
	// secretKeyRef). Exactly one of TokenFile and TokenEnv is required.
	TokenEnv string `json:"tokenEnv,omitempty"`
	// CAFile is a PEM bundle of the CA(s) the https server's certificate must chain to (a
	// mounted Secret or ConfigMap). Required with https://.
	CAFile string `json:"caFile,omitempty"`
	// Token is refused: a token in this configuration would sit in a ConfigMap. It is
	// declared only so that the error says so instead of "unknown field".
	Token string `json:"token,omitempty"`
}

// Constructor is the registry's entry for this type: the configuration parsed strictly
// (providers.DecodeConfig), then New.
var Constructor = providers.ConstructorOf(Type, func(ctx context.Context, name string, cfg Config) (providers.Provider, error) {
	return New(ctx, name, cfg)
})
