//! What holds the roots and signs: the roots Secret ([`roots`]), the signer built from it
//! ([`signer`]), and the Vault/OpenBao backend ([`vault`], configured by [`vault_config`]).

pub mod roots;
pub mod signer;
pub mod vault;
pub mod vault_config;
