//! The hub: federation state in the hub cluster, members reached through their own API
//! servers.
//!
//! | module | what it holds |
//! |---|---|
//! | [`init`], [`join`], [`status`], [`bundle`] | the commands `init`, `join`/`leave`, `status`, `bundle` |
//! | [`kube`] | clients from the hub's sources, CRD install, permission checks |
//! | [`member_access`] | the hub's least-privilege credentials for members |
//! | [`rollout`] | waiting for the agent Deployment `join` installs, and why it is stuck |
//! | [`trust`] | the roots Secret, the signer, Vault |
//! | [`plan`] | pure decisions: CSR → chain, member plan and status, federation, rotation |
//! | [`serve`] | `federator serve`: the federation and member controllers, metrics, leadership |

pub mod bundle;
pub mod foreign;
pub mod init;
pub mod join;
pub mod kube;
pub mod member_access;
pub mod plan;
pub mod rollout;
pub mod serve;
pub mod status;
pub mod trust;
