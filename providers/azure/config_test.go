package azure_test

import (
	"encoding/json"
	"testing"

	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/conformance"
)

func TestConfigStrict(t *testing.T) {
	conformance.RunConfig(t, conformance.Config{
		Parse:     func(raw json.RawMessage) error { _, err := azure.ParseConfig(raw); return err },
		Construct: azure.Constructor,
		Valid: `{"clusterName":"c1","subscriptionId":"00000000-0000-0000-0000-000000000001","resourceGroup":"MC_rg",
			"location":"westeurope","endpoint":"https://127.0.0.1:1","maxIPConfigurationsPerInterface":256,"pollFrequency":"1s",
			"insecureAllowCredentialWithHTTP":false}`,
		WrongTypes: map[string]string{"maxIPConfigurationsPerInterface": `"many"`, "pollFrequency": `1`, "resourceGroup": `["a"]`,
			"insecureAllowCredentialWithHTTP": `"no"`},
		Required: []string{"clusterName"},
	})
}
