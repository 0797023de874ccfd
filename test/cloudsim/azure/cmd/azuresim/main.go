// Command azuresim runs the Azure Resource Manager (Microsoft.Network subset) and IMDS
// simulator as its own process, with the admin API under /admin/. It serves plain HTTP: azcore
// sends bearer tokens over TLS only, so clients set InsecureAllowCredentialWithHTTP (the
// provider's insecureAllowCredentialWithHTTP option).
package main

import (
	"flag"
	"log"
	"net/http"

	azuresim "github.com/egressd/egressd/test/cloudsim/azure"
	"github.com/egressd/egressd/test/cloudsim/simkit"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8087", "address to listen on (loopback only by default)")
	sub := flag.String("subscription", "00000000-0000-0000-0000-000000000001", "subscription ID")
	loc := flag.String("location", "westeurope", "location")
	timing := flag.String("timing", "instant", "timing profile: instant, aws, azure or gcp, optionally :<scale> (docs/testbed.md)")
	seed := flag.Int64("timing-seed", 0, "seed of the timing profile's delays (0: from the clock, printed)")
	flag.Parse()
	p, err := simkit.ParseProfile(*timing)
	if err != nil {
		log.Fatal(err)
	}
	sim := azuresim.New(*sub, *loc)
	log.Printf("azuresim timing %v, seed %d", p, sim.SetTiming(p, *seed))
	log.Printf("azuresim listening on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, sim.Handler()))
}
