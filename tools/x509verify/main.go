// x509verify verifies a leaf certificate with Go's crypto/x509 (the verifier of istiod, of
// gRPC proxyless clients and of every Go TLS peer): federator's tests use it as an oracle
// independent of federator's own checks, in particular for URI name constraints.
//
//	x509verify ROOTS.pem CHAIN.pem LEAF.pem
//
// ROOTS.pem holds the trust anchors, CHAIN.pem the intermediates (may be empty), LEAF.pem the
// certificate to verify. It prints "ok" and exits 0 when the leaf verifies, else prints Go's
// error and exits 1; bad usage or unreadable input exits 2.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

func certs(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out, nil
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: a %s block, expected CERTIFICATE", path, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: x509verify ROOTS.pem CHAIN.pem LEAF.pem")
		os.Exit(2)
	}
	pools := [2]*x509.CertPool{x509.NewCertPool(), x509.NewCertPool()}
	for i, path := range os.Args[1:3] {
		cs, err := certs(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		for _, c := range cs {
			pools[i].AddCert(c)
		}
	}
	leaf, err := certs(os.Args[3])
	if err != nil || len(leaf) == 0 {
		fmt.Fprintln(os.Stderr, "no leaf certificate:", err)
		os.Exit(2)
	}
	_, err = leaf[0].Verify(x509.VerifyOptions{
		Roots:         pools[0],
		Intermediates: pools[1],
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
