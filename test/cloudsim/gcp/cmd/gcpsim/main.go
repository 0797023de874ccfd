// Command gcpsim runs the Compute Engine simulator as its own process: the Compute REST API
// under /compute/v1/, the metadata server under /computeMetadata/v1/ and the admin API under
// /admin/ (seed, faults, state, calls, events).
package main

import (
	"flag"
	"log"
	"net/http"

	gcpsim "github.com/egressd/egressd/test/cloudsim/gcp"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:8086", "address to listen on (loopback only by default)")
	flag.Parse()
	log.Printf("gcpsim listening on http://%s", *addr)
	log.Fatal(http.ListenAndServe(*addr, gcpsim.New().Handler()))
}
