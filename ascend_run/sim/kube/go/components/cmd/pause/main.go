// Command pause is the pod sandbox's process (what registry.k8s.io/pause runs): it holds the pod's
// namespaces, reaps orphans, and exits on SIGINT/SIGTERM. No image registry is reachable here, so
// install-kubernetes.sh builds it and sim imports it into every server's runtime.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
