//! The agent's decisions, with no Kubernetes I/O: every function here takes what the agent
//! read from its API server and returns what it should write. Unit-tested without a cluster.
//!
//! | module | step of the exchange |
//! |---|---|
//! | [`material`] | the agent Secret's layout (pending and installed key material) |
//! | [`csr`] | 1. when to make a fresh key and CSR, and what `status.csr` says |
//! | [`signed`] | 2. accept or refuse the hub's signed chain |
//! | [`cacerts`] | 3. the `cacerts` the cluster should have |
//! | [`istiod`] | 4. hot reload or restart |
//! | [`mesh`] | 5. `caCertificates` in the mesh config |
//! | [`status`] | 6. the status report |
//! | [`problem`] | what the decisions refuse, as structured errors |

pub mod cacerts;
pub mod csr;
pub mod istiod;
pub mod material;
pub mod mesh;
pub mod problem;
pub mod signed;
pub mod status;

#[cfg(test)]
mod testutil;
