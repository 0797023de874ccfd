// Command ec2sim runs the EC2 simulator as its own process: the EC2 Query endpoint (POST /),
// IMDSv2 (/latest/...) and the JSON admin API (/admin/...) on one listener, optionally seeded
// from a topology file. Point the AWS SDK at it with AWS_ENDPOINT_URL_EC2.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	awssim "github.com/egressd/egressd/test/cloudsim/aws"
	"github.com/egressd/egressd/test/cloudsim/simkit"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:4566", "address for the EC2, IMDS and admin endpoints")
	region := flag.String("region", "us-east-1", "simulated region")
	seed := flag.String("seed", "", "topology JSON file to seed (see awssim.Topology); the result is printed on stdout")
	timing := flag.String("timing", "instant", "timing profile: instant, aws, azure or gcp, optionally :<scale> (docs/testbed.md)")
	timingSeed := flag.Int64("timing-seed", 0, "seed of the timing profile's delays (0: from the clock, printed)")
	flag.Parse()
	if err := run(*listen, *region, *seed, *timing, *timingSeed); err != nil {
		fmt.Fprintln(os.Stderr, "ec2sim:", err)
		os.Exit(1)
	}
}

func run(listen, region, seed, timing string, timingSeed int64) error {
	profile, err := simkit.ParseProfile(timing)
	if err != nil {
		return err
	}
	sim := awssim.New(region)
	if seed != "" {
		b, err := os.ReadFile(seed)
		if err != nil {
			return err
		}
		var t awssim.Topology
		if err := json.Unmarshal(b, &t); err != nil {
			return fmt.Errorf("parsing %s: %w", seed, err)
		}
		out, err := sim.SeedTopology(t)
		if err != nil {
			return err
		}
		if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "ec2sim: timing %v, seed %d\n", profile, sim.SetTiming(profile, timingSeed))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: listen, Handler: sim, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
