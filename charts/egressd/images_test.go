package chart

import (
	"os"
	"regexp"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDefaultImagesAreTheReleasedOnes checks that the chart's default image references are the
// images `make images` builds and the release pushes: the Makefile's IMAGE_REPO and image names,
// and no default tag, so that both take the chart's appVersion (hack/images reads it from
// Chart.yaml; the release packages the chart with the tag's version as appVersion).
func TestDefaultImagesAreTheReleasedOnes(t *testing.T) {
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	repo := regexp.MustCompile(`(?m)^IMAGE_REPO \?= (\S+)$`).FindSubmatch(makefile)
	if repo == nil {
		t.Fatal("the Makefile sets no IMAGE_REPO default")
	}
	built := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(egressd-[a-z]+)=\./cmd/(egressd-[a-z]+)\b`).FindAllSubmatch(makefile, -1) {
		if string(m[1]) != string(m[2]) {
			t.Errorf("the Makefile builds image %s from ./cmd/%s; the image is named after its binary", m[1], m[2])
		}
		built[string(m[1])] = true
	}

	data, err := os.ReadFile("values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type image struct{ Repository, Tag, Digest string }
	var values struct {
		Controller struct{ Image image }
		Agent      struct{ Image image }
	}
	if err := yaml.Unmarshal(data, &values); err != nil {
		t.Fatal(err)
	}
	for name, img := range map[string]image{"egressd-controller": values.Controller.Image, "egressd-agent": values.Agent.Image} {
		if !built[name] {
			t.Errorf("make images does not build %s (it builds %v)", name, built)
		}
		if want := string(repo[1]) + "/" + name; img.Repository != want {
			t.Errorf("%s: default repository %q, want %q (what the release pushes)", name, img.Repository, want)
		}
		if img.Tag != "" || img.Digest != "" {
			t.Errorf("%s: default tag %q digest %q; both must be empty so that the appVersion applies", name, img.Tag, img.Digest)
		}
	}
}
