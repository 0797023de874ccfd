# egressd. `make demo` runs the lab walkthrough; `make test` runs every test. Both install what
# they need: Debian packages (hack/deps.sh), kube-apiserver and etcd built from the Go module
# proxy (hack/kube-binaries.sh, cached under ~/.cache/egressd), Go tools pinned in go.mod.

SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
GOLANGCI_LINT := $(BIN)/golangci-lint
ACTIONLINT := $(BIN)/actionlint
CRANE := $(BIN)/crane
PKGS ?= ./...
TEST_TIMEOUT ?= 40m
TEST_FLAGS ?= -race -count=1

.PHONY: all build images push-images crane generate verify verify-generated lint lint-workflows vet test test-unit e2e e2e-binaries demo bench soak bench-datapath fuzz tools deps kube-binaries clean

all: build

## build: the shipped binaries (cmd/...) and the lab's test tool (egressd-lab, for make demo).
build:
	$(GO) build -o $(BIN)/ ./cmd/... ./test/lab/cmd/egressd-lab

## images: the container images of egressd-controller and egressd-agent, built without a
## container engine by hack/images: OCI layouts (what the release pushes) and one archive per
## platform for `ctr images import`, under $(IMAGES_OUT). The tag defaults to the chart's
## appVersion, so the chart's default image references are these images.
IMAGES_OUT ?= out/images
IMAGE_PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_REPO ?= ghcr.io/egressd
IMAGE_TAG ?=
# The controller runs as uid 65532, as the chart's pod securityContext also says.
# The agent runs as uid 0 with only the capabilities its container's securityContext in the
# chart adds (all others dropped, not privileged). A non-root uid cannot work there: the
# chart sets allowPrivilegeEscalation: false, i.e. no_new_privs, under which the kernel grants
# no file capabilities on exec, and Kubernetes gives no ambient capabilities, so a non-root
# agent would start with an empty effective set. It would also need CAP_DAC_OVERRIDE on top, to
# pin under the host's bpffs (a root-owned directory, mode 0700 where systemd mounts it).
IMAGES := \
	egressd-controller=./cmd/egressd-controller:user=65532 \
	egressd-agent=./cmd/egressd-agent:user=0
IMAGE_NAMES := $(foreach i,$(IMAGES),$(firstword $(subst =, ,$(i))))

images:
	$(GO) run ./hack/images -out $(IMAGES_OUT) -platforms $(IMAGE_PLATFORMS) -repo $(IMAGE_REPO) \
		$(if $(IMAGE_TAG),-tag $(IMAGE_TAG)) $(IMAGES)

## push-images: push the OCI layouts of `make images` to $(IMAGE_REPO)/NAME:$(IMAGE_TAG), each a
## multi-platform index, with crane (log in first: bin/crane auth login ghcr.io -u USER
## --password-stdin). The release workflow runs it; IMAGE_TAG must be the tag they were built with.
push-images: $(CRANE)
	@[[ -n "$(IMAGE_TAG)" ]] || { echo "push-images: set IMAGE_TAG, the tag the images were built with"; exit 1; }
	@for name in $(IMAGE_NAMES); do \
		ref=$$($(CRANE) push $(IMAGES_OUT)/$$name.oci $(IMAGE_REPO)/$$name:$(IMAGE_TAG)) || exit 1; \
		echo "pushed $$ref"; done

crane: $(CRANE)

## tools: everything the tests, demo and verify need, installed by the project itself.
tools: deps kube-binaries $(GOLANGCI_LINT)

deps:
	@hack/deps.sh

kube-binaries:
	@hack/kube-binaries.sh >/dev/null

e2e-binaries:
	@hack/e2e-binaries.sh >/dev/null

$(GOLANGCI_LINT): hack/tools/go.mod hack/tools/go.sum
	cd hack/tools && $(GO) build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

$(ACTIONLINT): hack/tools/actionlint/go.mod hack/tools/actionlint/go.sum
	cd hack/tools/actionlint && $(GO) build -o $(ACTIONLINT) github.com/rhysd/actionlint/cmd/actionlint

$(CRANE): hack/tools/go.mod hack/tools/go.sum
	cd hack/tools && $(GO) build -o $(CRANE) github.com/google/go-containerregistry/cmd/crane

## generate: CRDs + deepcopy (controller-gen) and BPF objects (bpf2go, needs clang).
generate: deps
	$(GO) generate ./api/... ./bpf/...

## verify: regenerate and fail on any diff, then vet and lint (Go code and CI workflows).
verify: verify-generated vet lint lint-workflows

GENERATED := api bpf charts/egressd/files

# Fails when `make generate` changes anything: the committed (or edited) generated files do not
# match their sources.
verify-generated:
	@state() { git diff -- $(GENERATED) | sha256sum; git status --porcelain --untracked-files=all -- $(GENERATED); }; \
	before=$$(state); \
	$(MAKE) --no-print-directory generate >/dev/null || exit 1; \
	if [[ "$$before" != "$$(state)" ]]; then \
		echo "generated files are stale: 'make generate' changed them (commit the result):"; \
		git --no-pager diff --stat -- $(GENERATED); exit 1; fi

vet:
	$(GO) vet $(PKGS)

lint: $(GOLANGCI_LINT)
	$(GOLANGCI_LINT) run $(PKGS)

# actionlint checks the workflows' syntax, expressions, action inputs and permissions, and the
# run: scripts too when shellcheck is installed (it is on GitHub's runners; hack/deps.sh does
# not install it here).
lint-workflows: $(ACTIONLINT)
	@command -v shellcheck >/dev/null || echo "lint-workflows: no shellcheck, run: scripts are not checked"
	$(ACTIONLINT) .github/workflows/*.yaml

## test: every test, including the privileged namespace/BPF tests when run as root, the lab's
## end-to-end failover test on the binaries built here and, as root, the real-cluster suite
## (test/e2e, which skips with a message otherwise).
test: deps kube-binaries build $(if $(filter 0,$(shell id -u)),e2e-binaries)
	EGRESSD_KUBE_ASSETS=$$(hack/kube-binaries.sh) $(if $(filter 0,$(shell id -u)),EGRESSD_E2E_BINARIES=$$(hack/e2e-binaries.sh)) \
		$(GO) test $(TEST_FLAGS) -timeout $(TEST_TIMEOUT) $(PKGS)

## e2e: the real-cluster suite (docs/e2e.md): kubelets with containerd, the control plane and
## the CNI plugins built from the module proxy, the chart installed, upgraded and removed with
## helm. Needs root. Serialised with every other namespace/BPF test by a lock file.
e2e: deps kube-binaries e2e-binaries
	EGRESSD_KUBE_ASSETS=$$(hack/kube-binaries.sh) EGRESSD_E2E_BINARIES=$$(hack/e2e-binaries.sh) \
		flock -o /tmp/egressd-netns.lock $(GO) test -count=1 -v -timeout 30m -run TestCluster ./test/e2e/

## test-unit: the tests that need neither root nor an API server.
test-unit:
	EGRESSD_SKIP_PRIVILEGED=1 $(GO) test -short -count=1 $(PKGS)

## demo: the lab walkthrough of DESIGN.md §7.
demo: deps kube-binaries build
	@hack/demo.sh

## bench: benchmarks; figures are printed and written under out/.
bench: deps kube-binaries build
	@mkdir -p out
	EGRESSD_KUBE_ASSETS=$$(hack/kube-binaries.sh) $(GO) test -run='^$$' -bench=. -benchmem -timeout 60m $(PKGS) | tee out/bench.txt

## soak: random lab events and churn for SOAK_DURATION with the invariants checked throughout
## (docs/lab.md, "Soak"); prints a summary (also out/soak.txt), fails on any broken invariant.
## Needs root; serialised with every other namespace/BPF test by a lock file, held by flock
## itself (-o): a kube-apiserver or etcd orphaned by a killed test does not keep it.
SOAK_DURATION ?= 30m
SOAK_TIMEOUT ?= 4h
soak: deps kube-binaries build
	@mkdir -p out
	EGRESSD_SOAK=$(SOAK_DURATION) EGRESSD_KUBE_ASSETS=$$(hack/kube-binaries.sh) \
		flock -o /tmp/egressd-netns.lock $(GO) test -count=1 -v -run '^TestSoak$$' -timeout $(SOAK_TIMEOUT) ./test/lab/

## bench-datapath: the datapath benchmarks (docs/datapath.md); figures also in out/bench-datapath.txt.
## The baselines need iptables and ipset (Debian's iptables is iptables-nft): installed only
## when missing. Built first, then run under the netns lock (about 5 min here).
bench-datapath: deps
	@mkdir -p out
	@command -v iptables >/dev/null && command -v ipset >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq iptables ipset)
	$(GO) test -count=1 -run='^$$' ./bpf/... ./gateway/agent/dataplane/... >/dev/null
	set -o pipefail; flock -o /tmp/egressd-netns.lock $(GO) test -run='^$$' -bench=. -benchmem -timeout 15m \
		./bpf/... ./gateway/agent/dataplane/... | tee out/bench-datapath.txt

## fuzz: fuzz each BPF program through BPF_PROG_TEST_RUN for FUZZTIME (root); crashers land in bpf/testdata/fuzz.
## FUZZTIME is a count of executions (about 8k/s here, so about a minute per target): a duration
## makes Go 1.26's fuzz coordinator fail now and then with a bare "context deadline exceeded" and
## no crasher when the time runs out mid-exec (golang/go#75804, fixed in Go 1.27); seen here once
## in 4 five-second runs of FuzzProbe.
FUZZTIME ?= 500000x
FUZZ_TARGETS := FuzzClassifier FuzzTunnelEgress FuzzProbe
fuzz: deps
	@for t in $(FUZZ_TARGETS); do \
		flock -o /tmp/egressd-netns.lock $(GO) test -run='^$$' -fuzz="^$$t\$$" -fuzztime=$(FUZZTIME) ./bpf/ || exit 1; \
	done

clean:
	rm -rf $(BIN) out
