package oci

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is every timestamp in an image: file times in the layer and the config's created time.
var epoch = time.Unix(0, 0).UTC()

// BinDir is where the binary sits in the image; the entrypoint is BinDir/NAME.
const BinDir = "/usr/local/bin"

// SourceURL labels the images so that a registry (GHCR) links them to the repository.
const SourceURL = "https://github.com/egressd/egressd"

// Builder builds images for a set of platforms.
type Builder struct {
	// Go is the go command; "go" when empty.
	Go string
	// Dir is the directory `go build` runs in: the module holding the import paths.
	Dir string
	// Env is added to the go command's environment (the caller's own is inherited).
	Env []string
	// Platforms the images are built for, in index order.
	Platforms []Platform
	// Logf, when set, is told what is being built.
	Logf func(format string, args ...any)
}

// Built is one image: its multi-platform index and the per-platform images in it.
type Built struct {
	Ref       name.Tag
	Index     v1.ImageIndex
	Platforms []PlatformImage
}

// PlatformImage is the image of one platform.
type PlatformImage struct {
	Platform Platform
	Image    v1.Image
	Digest   v1.Hash
	// LayerSize is the compressed size of the image's only layer; Uncompressed its tar size.
	LayerSize, Uncompressed int64
}

// Build cross-builds img's binary for every platform and assembles the images and the index.
func (b Builder) Build(ctx context.Context, img Image, ref name.Tag) (*Built, error) {
	if len(b.Platforms) == 0 {
		return nil, fmt.Errorf("building %s: no platform", img.Name)
	}
	tmp, err := os.MkdirTemp("", "egressd-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	out := &Built{Ref: ref}
	var adds []mutate.IndexAddendum
	for _, p := range b.Platforms {
		bin := filepath.Join(tmp, img.Name+"-"+p.OS+"-"+p.Arch)
		if b.Logf != nil {
			b.Logf("building %s for %s from %s", img.Name, p, img.ImportPath)
		}
		if err := b.goBuild(ctx, img.ImportPath, p, bin); err != nil {
			return nil, err
		}
		pi, err := platformImage(img, p, ref.TagStr(), bin)
		if err != nil {
			return nil, fmt.Errorf("assembling %s for %s: %w", img.Name, p, err)
		}
		out.Platforms = append(out.Platforms, pi)
		adds = append(adds, mutate.IndexAddendum{
			Add:        pi.Image,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: p.OS, Architecture: p.Arch}},
		})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	idx, ok := mutate.Annotations(idx, map[string]string{
		"org.opencontainers.image.source":  SourceURL,
		"org.opencontainers.image.version": ref.TagStr(),
	}).(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("annotating the index of %s", img.Name)
	}
	out.Index = idx
	return out, nil
}

// goBuild builds a static, reproducible binary. The architecture levels are pinned so that a
// GOAMD64 or GOARM64 in the caller's environment cannot change the digest (v1 and v8.0 run on
// every node of those architectures). -s -w drop the symbol table and DWARF (a third of the
// size); panics and pprof still symbolize from the runtime's own tables.
func (b Builder) goBuild(ctx context.Context, importPath string, p Platform, out string) error {
	goCmd := b.Go
	if goCmd == "" {
		goCmd = "go"
	}
	cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, importPath)
	cmd.Dir = b.Dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Arch,
		"GOAMD64=v1", "GOARM64=v8.0")
	cmd.Env = append(cmd.Env, b.Env...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s for %s: %w\n%s", importPath, p, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// platformImage makes the single-layer image of one platform's binary.
func platformImage(img Image, p Platform, version, bin string) (PlatformImage, error) {
	binary, err := os.ReadFile(bin)
	if err != nil {
		return PlatformImage{}, err
	}
	layerTar, err := layerTar(img, binary)
	if err != nil {
		return PlatformImage{}, err
	}
	// Compressed once, here, at a fixed level: the layer digest depends only on the tar bytes
	// and the Go version's compress/gzip.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return PlatformImage{}, err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return PlatformImage{}, err
	}
	if err := zw.Close(); err != nil {
		return PlatformImage{}, err
	}
	compressed := gz.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return PlatformImage{}, err
	}

	cfg := &v1.ConfigFile{
		Architecture: p.Arch,
		OS:           p.OS,
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			Entrypoint: []string{BinDir + "/" + img.Name},
			Env:        []string{"PATH=" + BinDir + ":/usr/bin:/bin"},
			User:       img.User,
			Labels: map[string]string{
				"org.opencontainers.image.source":  SourceURL,
				"org.opencontainers.image.version": version,
			},
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	base, err = mutate.ConfigFile(base, cfg)
	if err != nil {
		return PlatformImage{}, err
	}
	image, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "hack/images: " + img.ImportPath,
		},
	})
	if err != nil {
		return PlatformImage{}, err
	}
	digest, err := image.Digest()
	if err != nil {
		return PlatformImage{}, err
	}
	return PlatformImage{
		Platform: p, Image: image, Digest: digest,
		LayerSize: int64(len(compressed)), Uncompressed: int64(len(layerTar)),
	}, nil
}

// layerTar is the image's only layer: the binary, an empty /tmp, and when the image names a
// user, an /etc/passwd and /etc/group for it (so that tools resolving the uid find a name and
// its primary group). Entries are in a fixed order with fixed owners, modes and times.
func layerTar(img Image, binary []byte) ([]byte, error) {
	type entry struct {
		path string
		mode int64
		body []byte
		dir  bool
	}
	var entries []entry
	if img.User != "" {
		passwd := "root:x:0:0:root:/root:/sbin/nologin\n"
		group := "root:x:0:\n"
		if img.User != "0" {
			passwd += "nonroot:x:" + img.User + ":" + img.User + ":nonroot:/:/sbin/nologin\n"
			group += "nonroot:x:" + img.User + ":\n"
		}
		entries = append(entries,
			entry{path: "etc/", mode: 0o755, dir: true},
			entry{path: "etc/group", mode: 0o644, body: []byte(group)},
			entry{path: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		)
	}
	entries = append(entries,
		entry{path: "tmp/", mode: 0o1777, dir: true},
		entry{path: "usr/", mode: 0o755, dir: true},
		entry{path: "usr/local/", mode: 0o755, dir: true},
		entry{path: strings.TrimPrefix(BinDir, "/") + "/", mode: 0o755, dir: true},
		entry{path: strings.TrimPrefix(BinDir, "/") + "/" + img.Name, mode: 0o755, body: binary},
	)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.path, Mode: e.mode, ModTime: epoch, Format: tar.FormatUSTAR,
			Typeflag: tar.TypeReg, Size: int64(len(e.body)),
		}
		if e.dir {
			hdr.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
