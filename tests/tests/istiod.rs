//! The proof with real istiod, on the istiod versions CI builds (`tools/build.sh istiod`:
//! the newest, 1.31.1, and the oldest one CI keeps, 1.27.9; docs/istiod.md says why), and a
//! federation whose members run both. `tests/istiod_matrix.rs` runs the same proofs on the
//! rest of the compatibility matrix (`scripts/istio-matrix`).
//!
//! Three members (cluster-1 and cluster-2 in `cluster.local`, cluster-3 in `east.example`),
//! the hub in cluster-1, and a fourth cluster outside the federation; one istiod
//! (`pilot-discovery`) per cluster. Workloads get their certificates from their own istiod
//! (`IstioCertificateService/CreateCertificate`, ServiceAccount token for `istio-ca`) and
//! trust only the `istio-ca-root-cert` their own istiod published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod istiod_proofs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_1_31_1_proves_the_federation() {
    istiod_proofs::federation("1.31.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_1_27_9_proves_the_federation() {
    istiod_proofs::federation("1.27.9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_istiod_1_31_1_is_restarted_into_plug_in_mode() {
    istiod_proofs::self_signed_restart("1.31.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_istiod_1_27_9_is_restarted_into_plug_in_mode() {
    istiod_proofs::self_signed_restart("1.27.9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_1_31_1_compares_root_certificates_as_the_rules_say() {
    istiod_proofs::root_comparison("1.31.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_1_27_9_compares_root_certificates_as_the_rules_say() {
    istiod_proofs::root_comparison("1.27.9").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_on_istiod_1_31_1_and_1_27_9_rotates_its_root() {
    istiod_proofs::mixed(&["1.31.1", "1.27.9"]).await;
}

/// The versions here are the ones CI builds.
#[test]
fn these_are_the_ci_versions() {
    assert_eq!(testbed::ISTIO_CI_VERSIONS, ["1.31.1", "1.27.9"]);
}
