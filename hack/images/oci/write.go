package oci

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Annotations naming an image in an OCI layout or archive: containerd's importer takes the full
// name from the first, and other tools (skopeo, crane) read the tag from the second.
const (
	AnnotationImageName = "io.containerd.image.name"
	AnnotationRefName   = "org.opencontainers.image.ref.name"
)

// LayoutPath is DIR/NAME.oci, the OCI layout of an image's index.
func LayoutPath(dir, imageName string) string { return filepath.Join(dir, imageName+".oci") }

// ArchivePath is DIR/NAME-OS-ARCH.tar, the importable archive of one platform's image.
func ArchivePath(dir, imageName string, p Platform) string {
	return filepath.Join(dir, imageName+"-"+p.OS+"-"+p.Arch+".tar")
}

// WriteLayout writes the index as an OCI layout at path whose index.json holds one descriptor:
// the multi-platform index, named by the annotations. `crane push path REF` pushes it as is.
// An existing layout at path is replaced, never appended to.
func WriteLayout(path string, b *Built) error {
	if err := os.RemoveAll(path); err != nil {
		return err
	}
	l, err := layout.Write(path, empty.Index)
	if err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", path, err)
	}
	if err := l.AppendIndex(b.Index, layout.WithAnnotations(names(b))); err != nil {
		return fmt.Errorf("writing OCI layout %s: %w", path, err)
	}
	return nil
}

// WriteArchive writes one platform's image as an OCI image archive (a tar of an OCI layout)
// whose index.json names it REPO/NAME:TAG, which `ctr images import` takes as the image name.
// The archive holds the very manifest the index lists, so a node that imports it has the image
// under the same digest the registry serves.
func WriteArchive(path string, b *Built, pi PlatformImage) error {
	manifest, err := pi.Image.RawManifest()
	if err != nil {
		return err
	}
	config, err := pi.Image.RawConfigFile()
	if err != nil {
		return err
	}
	configDigest, err := pi.Image.ConfigName()
	if err != nil {
		return err
	}
	layers, err := pi.Image.Layers()
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   types.OCIManifestSchema1,
			Size:        int64(len(manifest)),
			Digest:      pi.Digest,
			Platform:    &v1.Platform{OS: pi.Platform.OS, Architecture: pi.Platform.Arch},
			Annotations: names(b),
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return err
	}

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	write := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: size, ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := io.Copy(tw, r)
		return err
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }
	err = func() error {
		if err := write("oci-layout", int64(len(layoutFile)), bytes.NewReader(layoutFile)); err != nil {
			return err
		}
		for _, l := range layers {
			digest, err := l.Digest()
			if err != nil {
				return err
			}
			size, err := l.Size()
			if err != nil {
				return err
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			err = write(blob(digest), size, rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
		if err := write(blob(configDigest), int64(len(config)), bytes.NewReader(config)); err != nil {
			return err
		}
		if err := write(blob(pi.Digest), int64(len(manifest)), bytes.NewReader(manifest)); err != nil {
			return err
		}
		if err := write("index.json", int64(len(indexJSON)), bytes.NewReader(indexJSON)); err != nil {
			return err
		}
		return tw.Close()
	}()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("writing image archive %s: %w", path, err)
	}
	return nil
}

var layoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

func names(b *Built) map[string]string {
	return map[string]string{AnnotationImageName: b.Ref.String(), AnnotationRefName: b.Ref.TagStr()}
}
