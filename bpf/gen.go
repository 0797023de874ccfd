// Package bpf owns egressd's eBPF datapath: the C programs, their bpf2go
// output and the Go loader and map manager that pins them under a versioned
// bpffs directory so that an agent restart drops nothing.
package bpf

// The flags are pinned so that `make verify` reproduces the committed output
// byte for byte with the pinned clang (Debian clang 14).
//go:generate go tool bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror" -target bpfel -go-package bpf -type vni_layout -type drop_reason -type gw_flags -type ep_flags -type config_flags -type obs_point -type obs_verdict -type flow_event -type encap_path egressd egressd.c -- -I/usr/include/x86_64-linux-gnu
