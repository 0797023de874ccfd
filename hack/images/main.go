// Command images builds egressd's container images without a container engine (see package
// hack/images/oci):
//
//	go run ./hack/images -out DIR [-platforms linux/amd64,linux/arm64] [-tag TAG] [-repo REPO] NAME=IMPORTPATH[:user=UID] ...
//
// For each NAME it writes DIR/NAME.oci (the OCI layout of the multi-platform index) and
// DIR/NAME-OS-ARCH.tar per platform (an OCI archive named REPO/NAME:TAG for `ctr images
// import`), then prints one line per index and per platform image:
//
//	REF index SHA256-DIGEST DIR/NAME.oci
//	REF OS/ARCH SHA256-DIGEST DIR/NAME-OS-ARCH.tar layer=BYTES uncompressed=BYTES
//
// Run it from the module root: import paths and the chart (whose appVersion is the default tag)
// are found from there.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"

	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/hack/images/oci"
)

// chartFile holds the appVersion that is the images' default tag, so that the chart's default
// image references are what this command builds.
const chartFile = "charts/egressd/Chart.yaml"

func main() {
	out := flag.String("out", "", "output directory (required)")
	platforms := flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
	tag := flag.String("tag", "", "image tag (default: the appVersion of "+chartFile+")")
	repo := flag.String("repo", "ghcr.io/egressd", "repository the images are named under")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s -out DIR [flags] NAME=IMPORTPATH[:user=UID] ...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("images: ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *out, *platforms, *tag, *repo, flag.Args()); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out, platformList, tag, repo string, args []string) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	if len(args) == 0 {
		return fmt.Errorf("no image: pass NAME=IMPORTPATH[:user=UID] arguments")
	}
	platforms, err := oci.ParsePlatforms(platformList)
	if err != nil {
		return err
	}
	if tag == "" {
		if tag, err = appVersion(chartFile); err != nil {
			return err
		}
	}
	var images []oci.Image
	seen := map[string]bool{}
	for _, a := range args {
		img, err := oci.ParseImage(a)
		if err != nil {
			return err
		}
		if seen[img.Name] {
			return fmt.Errorf("image %q listed twice", img.Name)
		}
		seen[img.Name] = true
		images = append(images, img)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}

	b := oci.Builder{Platforms: platforms, Logf: log.Printf}
	for _, img := range images {
		ref, err := oci.Reference(repo, img.Name, tag)
		if err != nil {
			return err
		}
		built, err := b.Build(ctx, img, ref)
		if err != nil {
			return err
		}
		layoutPath := oci.LayoutPath(out, img.Name)
		if err := oci.WriteLayout(layoutPath, built); err != nil {
			return err
		}
		digest, err := built.Index.Digest()
		if err != nil {
			return err
		}
		fmt.Printf("%s index %s %s\n", ref, digest, layoutPath)
		for _, pi := range built.Platforms {
			path := oci.ArchivePath(out, img.Name, pi.Platform)
			if err := oci.WriteArchive(path, built, pi); err != nil {
				return err
			}
			fmt.Printf("%s %s %s %s layer=%d uncompressed=%d\n", ref, pi.Platform, pi.Digest, path, pi.LayerSize, pi.Uncompressed)
		}
	}
	return nil
}

// appVersion reads the chart's appVersion.
func appVersion(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the default tag (run from the module root, or pass -tag): %w", err)
	}
	var chart struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(data, &chart); err != nil {
		return "", fmt.Errorf("parsing %s: %w", path, err)
	}
	if chart.AppVersion == "" {
		return "", fmt.Errorf("%s has no appVersion; pass -tag", path)
	}
	return chart.AppVersion, nil
}
