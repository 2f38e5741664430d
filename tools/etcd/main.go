// Command etcd is a thin wrapper that builds the real etcd server from the
// published go.etcd.io/etcd/server/v3 Go module, for the testbed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
