//go:build tools

// The command install-kubernetes.sh builds here; listed so `go mod tidy` keeps it.
package tools

import _ "github.com/opencontainers/runc"
