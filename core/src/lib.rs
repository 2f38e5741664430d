//! # federator-core
//!
//! The pure trust logic of federator, with no I/O: everything here is a function of its
//! inputs (plus the operating system's random number generator for keys and serials), so it
//! is unit-tested without a cluster, a file system or a network.
//!
//! | module | what it holds |
//! |---|---|
//! | [`duration`] | Go-style durations (`8760h`, `30m`) as Kubernetes tools spell them |
//! | [`identity`] | cluster names, SPIFFE trust domains and SPIFFE IDs |
//! | [`key`] | private keys: generation, import (PKCS#8, SEC1, PKCS#1), strength rules |
//! | [`cert`] | PEM parsing and a readable summary of a certificate ([`cert::CertInfo`]) |
//! | [`ca`] | the issuing CA: create a self-signed root or import an existing CA |
//! | [`csr`] | the cluster side: a CSR for a cluster CA; the hub side: parsing and checking one |
//! | [`policy`] | the hub's signing policy, which decides every field of a cluster CA |
//! | [`name_constraint`] | the opt-in URI name constraint binding a cluster CA to its trust domain |
//! | [`bundle`] | canonical, byte-stable trust bundles keyed by trust domain |
//! | [`spiffe`] | SPIFFE bundle documents: reading a foreign trust domain's, the JWKs of ours |
//! | [`cacerts`] | istiod's `cacerts` layout and a validator applying istiod's load checks |
//! | [`verify`] | chain validation: CA paths (Go/istiod rules) and workload leaves (rustls-webpki) |
//! | [`fuzz`] | entry points for the fuzz targets and their corpus replay (`docs/fuzzing.md`) |
//! | [`istiod`] | istiod versions and what each does with a `cacerts` change (root comparison, restarts, leaf clamping) |
//!
//! The crate never logs and never prints: private keys only leave it through
//! [`key::PrivateKey::to_pkcs8_pem`], and their `Debug` output is redacted.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod ca;
pub mod cacerts;
pub mod cert;
pub mod csr;
pub mod duration;
mod error;
pub mod fuzz;
pub mod identity;
pub mod istiod;
pub mod key;
pub mod name_constraint;
pub mod policy;
mod rsa_keygen;
pub mod spiffe;
pub mod verify;

pub use error::{Error, Result};
