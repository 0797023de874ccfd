package oci

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

var both = []Platform{{OS: "linux", Arch: "amd64"}, {OS: "linux", Arch: "arm64"}}

// build builds img into dir as hack/images does, with extra environment for the go command.
func build(t *testing.T, img Image, dir string, env ...string) *Built {
	t.Helper()
	ref, err := Reference("ghcr.io/egressd", img.Name, "1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Builder{Platforms: both, Env: env}.Build(context.Background(), img, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteLayout(LayoutPath(dir, img.Name), b); err != nil {
		t.Fatal(err)
	}
	for _, pi := range b.Platforms {
		if err := WriteArchive(ArchivePath(dir, img.Name, pi.Platform), b, pi); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) v1.Hash {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestReproducible builds the same sources twice into two directories, the second time with an
// empty build cache so that every package is compiled again: every digest, and every byte
// written, must be equal. A different user must change the digest (the comparison is not blind
// to the image's content).
func TestReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds a binary four times")
	}
	img := Image{Name: "hello", ImportPath: "./testdata/hello", User: "65532"}
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := build(t, img, dirA), build(t, img, dirB, "GOCACHE="+t.TempDir())

	if da, db := digest(t, a.Index), digest(t, b.Index); da != db {
		t.Fatalf("index digests differ between two builds: %s and %s", da, db)
	} else {
		t.Logf("index digest of both builds: %s", da)
	}
	for i := range a.Platforms {
		if a.Platforms[i].Digest != b.Platforms[i].Digest {
			t.Errorf("%s: image digests differ: %s and %s", a.Platforms[i].Platform, a.Platforms[i].Digest, b.Platforms[i].Digest)
		}
	}
	for _, rel := range []string{"hello.oci/index.json", "hello-linux-amd64.tar", "hello-linux-arm64.tar"} {
		fa, err := os.ReadFile(filepath.Join(dirA, rel))
		if err != nil {
			t.Fatal(err)
		}
		fb, err := os.ReadFile(filepath.Join(dirB, rel))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fa, fb) {
			t.Errorf("%s differs between the two builds", rel)
		}
	}

	root := build(t, Image{Name: "hello", ImportPath: "./testdata/hello", User: "0"}, t.TempDir())
	if digest(t, root.Index) == digest(t, a.Index) {
		t.Errorf("images with users 65532 and 0 have the same digest %s", digest(t, a.Index))
	}
}

// TestImageContent checks what a kubelet and a registry see: the index lists one image per
// platform, each config names the user, the entrypoint and the platform, nothing carries a
// build time, and the layer holds the binary and the passwd entry of the user.
func TestImageContent(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-builds a binary twice")
	}
	dir := t.TempDir()
	b := build(t, Image{Name: "hello", ImportPath: "./testdata/hello", User: "65532"}, dir)

	// The layout on disk is what the release pushes: read it back rather than trusting b.
	l, err := layout.ImageIndexFromPath(LayoutPath(dir, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := l.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 || top.Manifests[0].Digest != digest(t, b.Index) {
		t.Fatalf("layout index.json lists %+v, want the one index %s", top.Manifests, digest(t, b.Index))
	}
	if got := top.Manifests[0].Annotations[AnnotationImageName]; got != "ghcr.io/egressd/hello:1.2.3" {
		t.Errorf("layout names the index %q", got)
	}
	idx, err := l.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(both) {
		t.Fatalf("index lists %d images, want %d", len(im.Manifests), len(both))
	}
	for i, p := range both {
		desc := im.Manifests[i]
		if desc.Platform == nil || desc.Platform.OS != p.OS || desc.Platform.Architecture != p.Arch {
			t.Errorf("index entry %d has platform %+v, want %s", i, desc.Platform, p)
		}
		image, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := image.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != p.OS || cfg.Architecture != p.Arch {
			t.Errorf("%s: config platform %s/%s", p, cfg.OS, cfg.Architecture)
		}
		if cfg.Config.User != "65532" {
			t.Errorf("%s: config user %q, want 65532", p, cfg.Config.User)
		}
		if want := []string{"/usr/local/bin/hello"}; !reflect.DeepEqual(cfg.Config.Entrypoint, want) {
			t.Errorf("%s: entrypoint %q, want %q", p, cfg.Config.Entrypoint, want)
		}
		if !cfg.Created.Equal(epoch) {
			t.Errorf("%s: created %s, want the fixed %s", p, cfg.Created, epoch)
		}
		layers, err := image.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != 1 {
			t.Fatalf("%s: %d layers, want 1", p, len(layers))
		}
		files := layerFiles(t, layers[0])
		if !strings.Contains(files["etc/passwd"], ":65532:65532:") {
			t.Errorf("%s: /etc/passwd %q does not name uid 65532", p, files["etc/passwd"])
		}
		if !strings.Contains(files["usr/local/bin/hello"], "hello from an egressd test image") {
			t.Errorf("%s: /usr/local/bin/hello is not the test binary", p)
		}
	}

	// The per-platform archive names the image and holds the manifest the index lists.
	for i, pi := range b.Platforms {
		index, blobs := readArchive(t, ArchivePath(dir, "hello", pi.Platform))
		if len(index.Manifests) != 1 {
			t.Fatalf("%s archive lists %d manifests", pi.Platform, len(index.Manifests))
		}
		desc := index.Manifests[0]
		if desc.Digest != im.Manifests[i].Digest {
			t.Errorf("%s archive holds %s, the index lists %s", pi.Platform, desc.Digest, im.Manifests[i].Digest)
		}
		if got := desc.Annotations[AnnotationImageName]; got != "ghcr.io/egressd/hello:1.2.3" {
			t.Errorf("%s archive names the image %q", pi.Platform, got)
		}
		if !blobs["blobs/sha256/"+desc.Digest.Hex] {
			t.Errorf("%s archive lacks the manifest blob %s", pi.Platform, desc.Digest)
		}
		if len(blobs) != 3 {
			t.Errorf("%s archive holds %d blobs, want manifest, config and layer", pi.Platform, len(blobs))
		}
	}
}

func layerFiles(t *testing.T, l v1.Layer) map[string]string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Uid != 0 || hdr.Gid != 0 || !hdr.ModTime.Equal(epoch) {
			t.Errorf("layer entry %s: owner %d:%d, time %s", hdr.Name, hdr.Uid, hdr.Gid, hdr.ModTime)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = string(body)
	}
}

func readArchive(t *testing.T, path string) (v1.IndexManifest, map[string]bool) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var index v1.IndexManifest
	blobs := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return index, blobs
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case hdr.Name == "index.json":
			if err := json.NewDecoder(tr).Decode(&index); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(hdr.Name, "blobs/sha256/"):
			blobs[hdr.Name] = true
		}
	}
}

func TestParseImage(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want Image
		err  string
	}{
		{arg: "egressd-agent=./cmd/egressd-agent", want: Image{Name: "egressd-agent", ImportPath: "./cmd/egressd-agent"}},
		{arg: "egressd-controller=./cmd/egressd-controller:user=65532", want: Image{Name: "egressd-controller", ImportPath: "./cmd/egressd-controller", User: "65532"}},
		{arg: "a=github.com/x/y/cmd/z:user=0", want: Image{Name: "a", ImportPath: "github.com/x/y/cmd/z", User: "0"}},
		{arg: "./cmd/egressd-agent", err: "want NAME=IMPORTPATH"},
		{arg: "=./cmd/x", err: "want NAME=IMPORTPATH"},
		{arg: "Agent=./cmd/x", err: "not a valid repository name"},
		{arg: "x=./cmd/x:uid=1", err: `unknown option "uid=1"`},
		{arg: "x=./cmd/x:user=nobody", err: `user "nobody" is not a numeric uid`},
		{arg: "x=:user=1", err: "empty import path"},
	} {
		got, err := ParseImage(tc.arg)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseImage(%q) = %+v, %v; want error containing %q", tc.arg, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseImage(%q) = %+v, %v; want %+v", tc.arg, got, err, tc.want)
		}
	}
}

func TestParsePlatforms(t *testing.T) {
	got, err := ParsePlatforms("linux/amd64, linux/arm64")
	if err != nil || !reflect.DeepEqual(got, both) {
		t.Errorf("ParsePlatforms = %v, %v", got, err)
	}
	for _, bad := range []string{"linux", "windows/amd64", "linux/386", "linux/amd64,linux/amd64", ""} {
		if _, err := ParsePlatforms(bad); err == nil {
			t.Errorf("ParsePlatforms(%q) accepted", bad)
		}
	}
}
