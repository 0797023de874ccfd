// Command gcpsim runs the Compute Engine simulator as its own process: the Compute REST API
// under /compute/v1/, the metadata server under /computeMetadata/v1/ and the admin API under
// /admin/ (seed, faults, state, calls, events).
package main

import (
	"flag"
	"log"
	"net/http"

	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
	"github.com/egressd/egressd/test/cloudsim/simkit"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8086", "address to listen on (loopback only by default)")
	timing := flag.String("timing", "instant", "timing profile: instant, aws, azure or gcp, optionally :<scale> (docs/testbed.md)")
	seed := flag.Int64("timing-seed", 0, "seed of the timing profile's delays (0: from the clock, printed)")
	flag.Parse()
	p, err := simkit.ParseProfile(*timing)
	if err != nil {
		log.Fatal(err)
	}
	sim := gcpsim.New()
	log.Printf("gcpsim timing %v, seed %d", p, sim.SetTiming(p, *seed))
	log.Printf("gcpsim listening on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, sim.Handler()))
}
