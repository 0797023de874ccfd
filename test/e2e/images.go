package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/egressd/egressd/test/envtest"
)

// Images the suite builds with hack/images (the project's only image builder) and imports into
// every node's containerd; no registry is involved, pods run them with pull policy Never.
const (
	ImageRepo = "ghcr.io/egressd"
	// PauseImage is containerd's sandbox_image: test/e2e/cmd/pause.
	PauseImage = ImageRepo + "/e2e-pause:e2e"
	// ClientImage is the workload: test/e2e/cmd/client.
	ClientImage = ImageRepo + "/e2e-client:e2e"
)

// Image is one built image: its reference and the linux/amd64 archive ctr imports, with the
// sizes hack/images reports (compressed layer, uncompressed).
type Image struct {
	Ref, Archive        string
	Layer, Uncompressed int64
}

// BuildImages runs `go run ./hack/images` from the module root for linux/amd64, writing into
// out, and returns the images by name. specs are NAME=IMPORTPATH[:user=UID].
func BuildImages(ctx context.Context, out, tag string, specs ...string) (map[string]Image, error) {
	args := append([]string{"run", "./hack/images", "-out", out, "-platforms", "linux/amd64", "-tag", tag, "-repo", ImageRepo}, specs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = envtest.RepoRoot()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building images (go %s): %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	// REF OS/ARCH DIGEST PATH layer=... per platform image.
	images := map[string]Image{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || f[1] != "linux/amd64" {
			continue
		}
		name := f[0][strings.LastIndex(f[0], "/")+1:]
		name, _, _ = strings.Cut(name, ":")
		img := Image{Ref: f[0], Archive: f[3]}
		for _, kv := range f[4:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "layer":
				img.Layer = n
			case "uncompressed":
				img.Uncompressed = n
			}
		}
		images[name] = img
	}
	for _, s := range specs {
		name, _, _ := strings.Cut(s, "=")
		if _, ok := images[name]; !ok {
			return nil, fmt.Errorf("hack/images printed no linux/amd64 archive for %s:\n%s", name, stdout.String())
		}
		if _, err := os.Stat(images[name].Archive); err != nil {
			return nil, err
		}
	}
	return images, nil
}

// Import loads images into every node's containerd (namespace k8s.io, where the CRI looks).
func (c *Cluster) Import(images ...Image) error {
	for _, n := range c.Nodes {
		for _, img := range images {
			if _, err := n.Ctr("images", "import", "--platform", "linux/amd64", img.Archive); err != nil {
				return err
			}
			if _, err := n.Ctr("images", "check", "name=="+img.Ref); err != nil {
				return err
			}
		}
	}
	return nil
}
