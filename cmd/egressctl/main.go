// Command egressctl inspects and operates egressd: convert, probe (and, with the control
// plane, status, explain, list). Installed as kubectl-egressd it is also `kubectl egressd`.
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
	code := withLab(cli.Run)(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
