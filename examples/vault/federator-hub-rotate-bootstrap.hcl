# Only for `federator rotate-root --vault-bootstrap` (with the hub's credential): have Vault
# generate a new internal root in the PKI mount to rotate to. Add this policy to the hub's
# token for the rotation and take it away afterwards; `rotate-root --vault-issuer NEW`, with an
# issuer you made yourself, needs nothing beyond federator-hub.hcl (its `pki/issuer/+` paths
# cover every issuer of the mount).
#
# tests/tests/vault.rs adds it to the hub's AppRole for the bootstrap part of the rotation test.

path "pki/root/rotate/internal" {
  capabilities = ["update"]
}
