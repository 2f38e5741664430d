// Command kubectl is a thin wrapper that builds the real kubectl from the published Kubernetes
// Go modules at the testbed's Kubernetes version (same body as upstream cmd/kubectl), for the
// chart's static proofs (`kubectl kustomize`) and the operator's kit.
package main

import (
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"

	// Client auth plugins, as upstream's kubectl registers them.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
