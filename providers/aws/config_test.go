package aws_test

import (
	"encoding/json"
	"testing"

	"github.com/egressd/egressd/providers/aws"
	"github.com/egressd/egressd/providers/conformance"
)

func TestConfigStrict(t *testing.T) {
	conformance.RunConfig(t, conformance.Config{
		Parse:     func(raw json.RawMessage) error { _, err := aws.ParseConfig(raw); return err },
		Construct: aws.Constructor,
		Valid: `{"clusterName":"c1","region":"eu-west-1","vpcId":"vpc-0abc","maxAttempts":5,"maxBackoff":"5s",
			"callLimits":{"mutatingQPS":5},"dedicatedDeviceIndex":1}`,
		WrongTypes: map[string]string{"maxAttempts": `"five"`, "maxBackoff": `"soon"`, "region": `42`, "callLimits": `{"mutatingQPS":"x"}`},
		Required:   []string{"clusterName"},
	})
}
