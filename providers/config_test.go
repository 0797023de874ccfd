package providers_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/aws/awssimtest"
	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/conformance"
	"github.com/egressd/egressd/providers/gcp"
	"github.com/egressd/egressd/providers/plugin"
)

type testConfig struct {
	Cluster string             `json:"clusterName" config:"required"`
	VPC     string             `json:"vpcId,omitempty"`
	Tries   int                `json:"maxAttempts,omitempty"`
	Backoff providers.Duration `json:"maxBackoff,omitempty"`
}

func TestDecodeConfig(t *testing.T) {
	for _, tc := range []struct {
		raw, err string // err: a substring of the error, "" for none
		want     testConfig
	}{
		{raw: `{"clusterName":"c1","vpcId":"v","maxAttempts":3,"maxBackoff":"150ms"}`,
			want: testConfig{Cluster: "c1", VPC: "v", Tries: 3, Backoff: providers.Duration(150 * time.Millisecond)}},
		// Names match case-insensitively, as encoding/json's do (the chart writes vpcID).
		{raw: `{"clusterName":"c1","vpcID":"v"}`, want: testConfig{Cluster: "c1", VPC: "v"}},
		{raw: `{"clusterName":"c1","vpcId":"a","VPCID":"b"}`, err: `fields "VPCID" and "vpcId" both set "vpcId"`},
		{raw: `{"clusterName":"c1","regoin":"x"}`, err: `unknown field "regoin" (known: clusterName, vpcId, maxAttempts, maxBackoff)`},
		{raw: `{"clusterName":"c1","maxAttempts":"3"}`, err: `field "maxAttempts": got a JSON string, want int`},
		{raw: `{"clusterName":"c1","maxBackoff":"soon"}`, err: `field "maxBackoff": time: invalid duration`},
		{raw: `{"clusterName":""}`, err: `missing required field "clusterName"`},
		{raw: ``, err: `missing required field "clusterName"`},
		{raw: `[]`, err: `got a JSON array, want an object`},
		{raw: `{"clusterName":`, err: `unexpected end of JSON input`},
	} {
		var got testConfig
		err := providers.DecodeConfig("test", json.RawMessage(tc.raw), &got)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.raw, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("%s: got %+v, want %+v", tc.raw, got, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", tc.raw, err, tc.err)
		case err != nil && !strings.HasPrefix(err.Error(), "parsing test provider configuration: "):
			t.Errorf("%s: error %q does not name the provider type", tc.raw, err)
		}
	}
}

// TestProviderConfigsStrict runs the configuration cases of the conformance suite for every
// cloud provider type of this repository and the plugin client: a fifth cloud adds its row.
// The static provider's are in providers/static.
func TestProviderConfigsStrict(t *testing.T) {
	behind := awssimtest.Harness{}.Setup(t, conformance.Topology{Zones: []string{"a"}, NodesPerZone: 1, IPsPerNode: 1}).Provider()
	dir, err := os.MkdirTemp("", "egressd-plugin") // short: a socket path has at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	sock, tokenFile := filepath.Join(dir, "p.sock"), filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: plugin.NewHandler(behind, plugin.WithToken("s3cret")), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	for typ, c := range map[string]conformance.Config{
		aws.Type: {Construct: aws.Constructor,
			Valid: `{"clusterName":"c1","region":"eu-west-1","vpcId":"vpc-0abc","maxAttempts":5,"maxBackoff":"5s",
				"callLimits":{"mutatingQPS":5},"dedicatedDeviceIndex":1,"consistencyWindow":"30s"}`,
			WrongTypes: map[string]string{"maxAttempts": `"five"`, "maxBackoff": `"soon"`, "region": `42`, "callLimits": `{"mutatingQPS":"x"}`, "consistencyWindow": `"a while"`},
			Required:   []string{"clusterName"}},
		gcp.Type: {Construct: gcp.Constructor,
			Valid: `{"clusterName":"c1","project":"p1","endpoint":"http://127.0.0.1:1","withoutAuthentication":true,
				"maxAliasRangesPerInterface":10,"retryBudget":"30s"}`,
			WrongTypes: map[string]string{"maxAliasRangesPerInterface": `"ten"`, "retryBudget": `"later"`, "withoutAuthentication": `"yes"`, "project": `7`},
			Required:   []string{"clusterName"}},
		azure.Type: {Construct: azure.Constructor,
			Valid: `{"clusterName":"c1","subscriptionId":"00000000-0000-0000-0000-000000000001","resourceGroup":"MC_rg",
				"location":"westeurope","endpoint":"https://127.0.0.1:1","maxIPConfigurationsPerInterface":256,"pollFrequency":"1s",
				"insecureAllowCredentialWithHTTP":false}`,
			WrongTypes: map[string]string{"maxIPConfigurationsPerInterface": `"many"`, "pollFrequency": `1`, "resourceGroup": `["a"]`,
				"insecureAllowCredentialWithHTTP": `"no"`},
			Required: []string{"clusterName"}},
		plugin.Type: {Construct: plugin.Constructor,
			Valid:      `{"clusterName":"c1","endpoint":"unix://` + sock + `","tokenFile":"` + tokenFile + `"}`,
			WrongTypes: map[string]string{"endpoint": `8080`, "tokenFile": `{"secret":"x"}`},
			Required:   []string{"clusterName", "endpoint"}},
	} {
		t.Run(typ, func(t *testing.T) { conformance.RunConfig(t, c) })
	}
}
