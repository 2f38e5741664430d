//! What holds the roots and signs: the roots Secret's data ([`roots`]) and its store on the
//! hub ([`store`]), the signer built from it ([`signer`]), and the Vault/OpenBao backend
//! ([`vault`], configured by [`vault_config`]).

pub mod roots;
pub mod signer;
pub mod store;
pub mod vault;
pub mod vault_config;
