// Command kube-apiserver is a thin wrapper that builds the real Kubernetes API
// server from the published k8s.io/kubernetes Go module, for the testbed.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
