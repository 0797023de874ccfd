#!/usr/bin/env bash
# Runs the lab walkthrough (DESIGN.md §7) through egressd-lab (test/lab/cmd/egressd-lab).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bin/egressd-lab demo "$@"
