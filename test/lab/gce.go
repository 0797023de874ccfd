package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
	"github.com/egressd/egressd/test/cloudsim/gcp/gcefabric"
	"github.com/egressd/egressd/test/cloudsim/simkit"
	"github.com/egressd/egressd/test/netns"
)

// startGCE runs the Compute Engine simulator in-process on loopback and seeds it: project
// GCPProject, one subnetwork per zone of network egressd-lab, and one instance per node (the
// control plane's too) whose nic0's primary address is the node's underlay address, without
// external IP (private nodes: public egress needs a NIC without access config). It serves the
// metadata server in the control plane's namespace (the controller finds its project there,
// as on GCE; the agents ask no metadata on GCP), and starts the router that follows the
// simulator (gcefabric: alias routes, the access configs' NAT towards gcefabric.Internet).
func (l *Lab) startGCE(context.Context) error {
	l.GCE = gcpsim.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	l.SimAddr = ln.Addr().String()
	l.serve(ln, l.GCE.Handler())

	seed := gcpsim.ProjectSeed{ID: GCPProject}
	for _, z := range l.Topo.Zones {
		seed.Subnets = append(seed.Subnets, gcpsim.SubnetSeed{Name: gceSubnet(z.Name), Region: GCPRegion, Network: "egressd-lab", CIDR: z.Subnet.String()})
	}
	nodeOf := map[string]*netns.Node{}
	for _, n := range l.Nodes {
		n.ProviderID = "gce://" + GCPProject + "/" + n.Zone.Name + "/" + n.Name
	}
	for _, n := range append(l.bedNodes(), l.CP) {
		seed.Instances = append(seed.Instances, gcpsim.InstanceSeed{Name: n.Name, Zone: n.Zone.Name,
			NICs: []gcpsim.NICSeed{{Subnet: gceSubnet(n.Zone.Name), NetworkIP: n.IP.String()}}})
		nodeOf[gcefabric.InstanceKey(GCPProject, n.Zone.Name, n.Name)] = n
	}
	if err := l.GCE.Seed(seed); err != nil {
		return err
	}
	l.GCE.SetMetadata(gcpsim.MetadataSeed{Project: GCPProject, Zone: l.CP.Zone.Name, Instance: l.CP.Name})
	// Only the metadata server's paths: the Compute API is not at 169.254.169.254.
	md := http.NewServeMux()
	md.Handle("/computeMetadata/", l.GCE.Handler())
	md.Handle("/{$}", l.GCE.Handler()) // the metadata client's GCE detection
	if err := l.serveMetadata(l.CP.Namespace, md); err != nil {
		return err
	}
	p, err := simkit.ParseProfile(l.Config.Timing)
	if err != nil {
		return err
	}
	tseed := l.GCE.SetTiming(p, l.Config.TimingSeed)
	fmt.Fprintf(l.Config.Log, "Compute Engine simulator timing: %v, seed %d\n", p, tseed)
	l.fabric = gcefabric.New(l.GCE, l.Topo, nodeOf, gcefabric.Internet, l.workDir)
	if err := l.fabric.Sync(); err != nil {
		return err
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.fabric.Run(l.ctx, routerPoll)
	}()
	return nil
}

func gceSubnet(zone string) string { return "nodes-" + zone }

// bedNodes returns the bed nodes of the Kubernetes nodes.
func (l *Lab) bedNodes() []*netns.Node {
	out := make([]*netns.Node, len(l.Nodes))
	for i, n := range l.Nodes {
		out[i] = n.Node
	}
	return out
}

// GCEFabric returns the GCP lab's router (nil in the EC2 lab): its Untranslated counter is the
// internet-bound packets dropped for a source no access config translated.
func (l *Lab) GCEFabric() *gcefabric.Fabric { return l.fabric }

// gceRoutes is Routes in the GCP lab: alias IP → node.
func (l *Lab) gceRoutes() (map[netip.Addr]string, map[netip.Addr]netip.Addr, error) {
	aliases, _ := l.fabric.Routes()
	out := map[netip.Addr]string{}
	for alias, key := range aliases {
		name := key[strings.LastIndex(key, "/")+1:]
		out[netip.MustParseAddr(alias)] = name
	}
	return out, nil, l.fabric.Err()
}

// gceEnv is the environment of the GCP lab's binaries: the metadata server where the lab
// serves it (GCE_METADATA_HOST, which the metadata client honours).
func gceEnv() []string { return []string{"GCE_METADATA_HOST=" + IMDSAddr} }

// gceControllerConfig is egressd-controller's --config in the GCP lab: the Compute endpoint is
// the simulator's, the project is the metadata server's.
func (l *Lab) gceControllerConfig() string {
	return fmt.Sprintf(`clusterName: %s
namespace: %s
providers:
  gcp:
    endpoint: http://%s
    withoutAuthentication: true
`, ClusterName, SystemNS, l.SimAddr)
}
