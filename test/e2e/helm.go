package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Helm runs the helm binary (hack/e2e-binaries.sh) in the control-plane namespace as
// cluster-admin, with its cache and config under the work directory.
func (c *Cluster) Helm(ctx context.Context, args ...string) (string, error) {
	home := filepath.Join(c.Config.Dir, "helm")
	cmd := exec.CommandContext(ctx, filepath.Join(c.Config.BinDir, "helm"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.AdminConf, "HELM_CACHE_HOME="+home+"/cache",
		"HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out []byte
	err := c.CP.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return string(out), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
