//! The hub: federation state in the hub cluster, members reached through their own API
//! servers.
//!
//! | module | what it holds |
//! |---|---|
//! | [`bundle`] | `federator bundle` |
//! | [`kube`] | clients, server-side apply, CRD install, permission checks |
//! | [`roots`] | the roots Secret and the signer |
//! | [`member_access`] | the hub's least-privilege credentials for members |
//! | [`init`] | `federator init` |
//! | [`join`] | `federator join cluster` / `leave cluster` |
//! | [`rollout`] | waiting for the agent Deployment, and why it is stuck |
//! | [`metrics`] | Prometheus metrics of `serve` |
//! | [`plan`] | pure decisions for one member (spec, signing, renewal, status) |
//! | [`serve`] | the reconciler runtime |
//! | [`status`] | `federator status` |
//! | [`vault`] | the Vault/OpenBao root backend |

pub mod bundle;
pub mod init;
pub mod join;
pub mod kube;
pub mod member_access;
pub mod metrics;
pub mod plan;
pub mod rollout;
pub mod roots;
pub mod serve;
pub mod status;
pub mod vault;
