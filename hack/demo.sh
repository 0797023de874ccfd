#!/usr/bin/env bash
# Runs the lab walkthrough (DESIGN.md §7) through egressctl.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bin/egressctl lab demo "$@"
