// Package oci assembles egressd's container images without a container engine: it cross-builds
// each binary with the Go toolchain, puts it alone in one layer on an empty base (nothing can be
// pulled here, and a static Go binary needs no distribution), and writes the multi-platform
// index as an OCI layout (what the release pushes) plus one archive per platform that
// `ctr images import` loads into a node's containerd.
//
// Everything that goes into a digest is fixed: file modes, owners and times in the layer, the
// config's created time, the compression, and the binary itself (-trimpath, no build ID, no VCS
// stamp, pinned GOAMD64/GOARM64 levels). The same sources and Go toolchain give the same digests.
package oci

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Image is one image to build: the NAME=IMPORTPATH[:user=UID] argument of hack/images.
type Image struct {
	// Name is the image's name under the repository, and the binary's name in the image.
	Name string
	// ImportPath is the Go package of the binary, as `go build` takes it (./cmd/egressd-agent).
	ImportPath string
	// User is the numeric uid the image runs as, or "" to leave the config's User unset. When
	// set, the image carries an /etc/passwd and /etc/group naming it.
	User string
}

// nameRE is a repository path component as the OCI distribution spec allows it.
var nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// ParseImage parses NAME=IMPORTPATH[:user=UID].
func ParseImage(arg string) (Image, error) {
	imageName, rest, ok := strings.Cut(arg, "=")
	if !ok || imageName == "" || rest == "" {
		return Image{}, fmt.Errorf("image %q: want NAME=IMPORTPATH[:user=UID]", arg)
	}
	if !nameRE.MatchString(imageName) {
		return Image{}, fmt.Errorf("image %q: name %q is not a valid repository name (lower-case letters, digits, '.', '_', '-')", arg, imageName)
	}
	img := Image{Name: imageName, ImportPath: rest}
	if path, opt, ok := strings.Cut(rest, ":"); ok {
		img.ImportPath = path
		uid, ok := strings.CutPrefix(opt, "user=")
		if !ok {
			return Image{}, fmt.Errorf("image %q: unknown option %q after the import path (only user=UID)", arg, opt)
		}
		if _, err := strconv.ParseUint(uid, 10, 32); err != nil {
			return Image{}, fmt.Errorf("image %q: user %q is not a numeric uid", arg, uid)
		}
		img.User = uid
	}
	if img.ImportPath == "" {
		return Image{}, fmt.Errorf("image %q: empty import path", arg)
	}
	return img, nil
}

// Platform is an OS/architecture pair an image is built for.
type Platform struct {
	OS, Arch string
}

// goarchs are the architectures hack/images builds for: the ones egressd's BPF objects are
// generated for (bpf2go's little-endian targets) and that Kubernetes nodes run.
var goarchs = map[string]bool{"amd64": true, "arm64": true}

// ParsePlatforms parses a comma-separated list of os/arch, such as linux/amd64,linux/arm64.
func ParsePlatforms(list string) ([]Platform, error) {
	var out []Platform
	seen := map[Platform]bool{}
	for _, s := range strings.Split(list, ",") {
		osName, arch, ok := strings.Cut(strings.TrimSpace(s), "/")
		if !ok || osName != "linux" || !goarchs[arch] {
			return nil, fmt.Errorf("platform %q: want linux/amd64 or linux/arm64", s)
		}
		p := Platform{OS: osName, Arch: arch}
		if seen[p] {
			return nil, fmt.Errorf("platform %q listed twice", s)
		}
		seen[p] = true
		out = append(out, p)
	}
	return out, nil
}

func (p Platform) String() string { return p.OS + "/" + p.Arch }

// Reference is REPO/NAME:TAG, validated as a registry reference.
func Reference(repo, imageName, tag string) (name.Tag, error) {
	ref, err := name.NewTag(repo+"/"+imageName+":"+tag, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %s/%s:%s: %w", repo, imageName, tag, err)
	}
	return ref, nil
}
