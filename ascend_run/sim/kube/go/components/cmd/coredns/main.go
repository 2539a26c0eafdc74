// Command coredns is CoreDNS with only the plugins cluster DNS needs on the simulated cluster: the
// kubernetes plugin (Services, headless Services and their pods' names), bind (one address: two simulated
// clusters side by side), and the usual health, readiness, cache and logging. No upstream forwarding: the
// simulated cluster has no outside network.
package main

import (
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/coredns/coredns/coremain"
)

func main() { coremain.Run() }
