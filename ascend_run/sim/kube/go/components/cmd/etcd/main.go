// Command etcd is etcd's own server (etcdmain), pinned by this module's go.mod to the version
// k8s.io/kubernetes v1.34.4 was released with.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
