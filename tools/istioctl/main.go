// Command istioctl builds Istio's real istioctl from the published istio.io/istio Go module
// (the same module and version as the testbed's istiod, tools/pilot-discovery), as the
// reference `istioctl create-remote-secret` the remote-secret tests compare with. It only
// calls upstream's command tree.
package main

import (
	"fmt"
	"os"

	"istio.io/istio/istioctl/cmd"
	"istio.io/istio/pkg/log"
)

func main() {
	if err := cmd.ConfigAndEnvProcessing(); err != nil {
		fmt.Fprintf(os.Stderr, "Could not initialize: %v\n", err)
		os.Exit(cmd.GetExitCode(err))
	}
	root := cmd.GetRootCmd(os.Args[1:])
	log.EnableKlogWithCobra()
	if err := root.Execute(); err != nil {
		os.Exit(cmd.GetExitCode(err))
	}
}
