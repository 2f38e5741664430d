module federator.dev/tools/x509verify

go 1.26
