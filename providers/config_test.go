package providers_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/providers"
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
