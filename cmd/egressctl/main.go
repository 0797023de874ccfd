// Command egressctl inspects and operates egressd: status, explain, list, convert and probe.
// Copied or linked as kubectl-egressd on PATH it is also `kubectl egressd`. The lab is a
// separate test tool (test/lab/cmd/egressd-lab): nothing of it is linked in here.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/egressd/egressd/cmd/egressctl/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
