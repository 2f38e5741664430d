//! The hub's decisions, as pure functions of what was read and of `now`: no I/O, unit-tested
//! without a server. The controllers in [`super::serve`] read, call these, and write.
//!
//! A member's CSR goes [`csr`] → the policy (`federator_core::policy`) → the signer
//! ([`super::trust::signer`]) → [`chain`] (the signed-CA answer) → [`member`] (the spec,
//! renewal and status of each member), while [`federation`] decides what every member is told
//! and [`rotation`] moves root rotations forward.
//!
//! | module | decides |
//! |---|---|
//! | [`csr`] | whether a published CSR can go to the policy, and for whom |
//! | [`chain`] | the signed-CA answer and its renewal point |
//! | [`member`] | a member's spec, whether to sign, renew or re-sign, its events and status |
//! | [`federation`] | trust domains in use, the bundle and its generation, the Federation status |
//! | [`rotation`] | the phase of a root rotation and what to record |
//! | [`endpoint_svid`] | whether the bundle endpoint's X509-SVID must be issued again |
//! | [`peers`] | the peers' reader kubeconfigs each member is handed (remote secrets) |
//! | [`sign_budget`] | whether a member may have another CA signed now (a rate limit) |

pub mod chain;
pub mod csr;
pub mod endpoint_svid;
pub mod federation;
pub mod foreign;
pub mod member;
pub mod peers;
pub mod rotation;
pub mod sign_budget;
