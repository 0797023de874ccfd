package coordinator

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/tools/events"
	testclock "k8s.io/utils/clock/testing"

	egressv1 "github.com/egressd/egressd/api/v1alpha1"
	"github.com/egressd/egressd/providers"
	"github.com/egressd/egressd/providers/azure"
	"github.com/egressd/egressd/providers/azure/azuresimtest"
	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
)

// TestUniformUpgradeIsReassigned: a public gateway on an AKS Uniform pool holds its address
// through an ipConfiguration of the instance's model (status.privateAddressNotHeld, the
// cloud's Dynamic address as status.publicNATSource). An AKS upgrade resets the instance's
// model and drops it; once the holder's discovery shows the NAT source gone, the coordinator
// records the address as held nowhere and assigns it again on the same node, from the same
// prefix.
func TestUniformUpgradeIsReassigned(t *testing.T) {
	if server == nil {
		t.Skip("needs the envtest API server (not in -short mode)")
	}
	const sub, rg, vmss = "11111111-2222-3333-4444-555555555555", "MC_uniform", "aks-egw-vmss"
	sim := azuresim.New(sub, "westeurope")
	if err := sim.AddSubnet(azuresim.SubnetSeed{ResourceGroup: rg, VNet: "aks-vnet", Name: "nodes", CIDR: "10.240.0.0/16"}); err != nil {
		t.Fatal(err)
	}
	sim.AddScaleSet(azuresim.ScaleSetSeed{ResourceGroup: rg, Name: vmss, Subnet: sim.SubnetID(rg, "aks-vnet", "nodes"),
		Instances: []azuresim.ScaleSetInstanceSeed{{ID: "0", PrimaryIP: "10.240.0.10"}}})
	srv := httptest.NewTLSServer(sim.Handler())
	t.Cleanup(srv.Close)
	clients, err := azure.NewClients(sub, azuresimtest.StaticToken{}, azure.ClientOptions(srv.URL, srv.Client(), false, 2))
	if err != nil {
		t.Fatal(err)
	}
	prov, err := azure.New(context.Background(), azure.Type, azure.Config{ClusterName: "c1", SubscriptionID: sub, ResourceGroup: rg,
		PollFrequency: providers.Duration(10 * time.Millisecond)}, azure.WithClients(clients))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: context.Background(), clock: testclock.NewFakeClock(time.Now()), health: &staticHealth{down: map[netip.Addr]bool{}},
		recorder: events.NewFakeRecorder(1000), gateway: "uniform-upgrade", nodes: map[string]string{}, ips: map[string]netip.Addr{}, zones: map[string][]string{}}
	ensureNamespace(t, testNamespace)
	name := "aks-egw-vmss000000"
	instance := sim.ScaleSetVMID(rg, vmss, "0")
	e.addNode(name, "westeurope-1", "azure://"+instance, netip.MustParseAddr("10.240.0.10"))
	e.nodes[name], e.ips[name] = "0", netip.MustParseAddr("10.240.0.10")
	if e.cfg, err = ParseConfig([]byte("clusterName: c1\nnamespace: " + testNamespace + "\ngcGracePeriod: 10m\n")); err != nil {
		t.Fatal(err)
	}
	e.prov = prov
	e.c = New(Options{Config: e.cfg, Client: server.Client, Reader: server.Client, Recorder: e.recorder,
		Providers: map[string]providers.Provider{"azure": prov}, Health: e.health, Clock: e.clock})
	e.gwr, e.eipr = NewGatewayReconciler(e.c), NewEgressIPReconciler(e.c)
	t.Cleanup(e.cleanup)
	e.createGateway(func(gw *egressv1.EgressGateway) {
		gw.Spec.Addresses.Cloud = &egressv1.CloudAddresses{Provider: "azure", Public: true}
	})
	e.settle()

	held := func() (egressv1.EgressIP, []azuresim.ScaleSetIPConfig) {
		t.Helper()
		eips := e.egressIPs()
		if len(eips) != 1 {
			t.Fatalf("%d EgressIPs, want 1", len(eips))
		}
		return eips[0], sim.ScaleSetIPConfigs()
	}
	before, cfgs := held()
	if before.Status.Node != name || !before.Status.PrivateAddressNotHeld || len(cfgs) != 1 || before.Status.PublicNATSource != cfgs[0].PrivateIP || before.Status.PublicIP != cfgs[0].PublicIP {
		t.Fatalf("before the upgrade: status %+v, cloud %+v", before.Status, cfgs)
	}
	if err := sim.UpgradeInstance(instance); err != nil {
		t.Fatal(err)
	}
	// The holder's cached discovery expires; the agents renew their Leases meanwhile.
	e.clock.Step(e.cfg.CapacityTTL.Duration + time.Second)
	e.renewAll()
	e.settle()
	after, cfgs := held()
	if after.Status.Node != name || len(cfgs) != 1 || after.Status.PublicNATSource != cfgs[0].PrivateIP || after.Status.PublicIP != cfgs[0].PublicIP ||
		after.Status.Handle.PublicAllocation != before.Status.Handle.PublicAllocation {
		t.Fatalf("after the upgrade: status %+v (was %+v), cloud %+v", after.Status, before.Status, cfgs)
	}
	found := false
	for len(e.recorder.Events) > 0 && !found {
		ev := <-e.recorder.Events
		found = strings.Contains(ev, "Resync") || strings.Contains(ev, "no longer holds")
	}
	if !found {
		t.Error("no event says the cloud lost the address")
	}
}
