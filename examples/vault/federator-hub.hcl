# Vault/OpenBao policy of the federator hub, for a PKI mount at `pki` (change the prefix if you
# mount it elsewhere, and pass the same --vault-mount / root.vault.mount). The root key stays in
# Vault: the hub only reads the issuer and has it sign each cluster CA as an intermediate, after
# checking the CSR under its own policy (path length 0, the cluster's SPIFFE trust domain, the
# configured TTL). It cannot issue leaf certificates, create roles, or touch any other issuer's
# key. Token self-lookup and renewal come from Vault's `default` policy, which every token gets
# unless created with no_default_policy.
#
# tests/tests/vault.rs loads this file as it is for the hub's AppRole and Kubernetes-auth
# logins (the tokens the hub signs with are limited to it).

# The issuer's certificate and chain (the hub checks what Vault signs against it, and serves
# the root in the trust bundle).
path "pki/issuer/+" {
  capabilities = ["read"]
}
path "pki/issuer/+/json" {
  capabilities = ["read"]
}

# Sign a member's cluster CA (an intermediate) under the issuer.
path "pki/issuer/+/sign-intermediate" {
  capabilities = ["update"]
}
