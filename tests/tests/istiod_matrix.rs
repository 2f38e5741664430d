//! The rest of the istiod compatibility matrix: the proofs of `tests/istiod.rs` on every
//! version `tools/build.sh istiod-all` builds that CI does not (1.29.2, 1.28.3, 1.26.8), and a
//! federation whose five members run the five versions. CI does not run this binary (a cold
//! build of each version costs about 7 minutes; docs/istiod.md); `scripts/istio-matrix` builds
//! every version and runs it together with `tests/istiod.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod istiod_proofs;

macro_rules! matrix {
    ($($version:literal => $federation:ident, $self_signed:ident, $roots:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $federation() {
            istiod_proofs::federation($version).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $self_signed() {
            istiod_proofs::self_signed_restart($version).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $roots() {
            istiod_proofs::root_comparison($version).await;
        }
    )*};
}

matrix! {
    "1.29.2" => istiod_1_29_2_proves_the_federation,
        a_self_signed_istiod_1_29_2_is_restarted_into_plug_in_mode,
        istiod_1_29_2_compares_root_certificates_as_the_rules_say;
    "1.28.3" => istiod_1_28_3_proves_the_federation,
        a_self_signed_istiod_1_28_3_is_restarted_into_plug_in_mode,
        istiod_1_28_3_compares_root_certificates_as_the_rules_say;
    "1.26.8" => istiod_1_26_8_proves_the_federation,
        a_self_signed_istiod_1_26_8_is_restarted_into_plug_in_mode,
        istiod_1_26_8_compares_root_certificates_as_the_rules_say;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_federation_on_five_istiod_versions_rotates_its_root() {
    istiod_proofs::mixed(testbed::ISTIO_VERSIONS).await;
}

/// Together with `tests/istiod.rs`, every declared version is covered.
#[test]
fn the_matrix_covers_every_version() {
    let here = ["1.29.2", "1.28.3", "1.26.8"];
    let mut all: Vec<&str> = testbed::ISTIO_CI_VERSIONS.to_vec();
    all.extend(here);
    all.sort_unstable();
    let mut declared = testbed::ISTIO_VERSIONS.to_vec();
    declared.sort_unstable();
    assert_eq!(all, declared);
}
