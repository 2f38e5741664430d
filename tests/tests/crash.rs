//! The hub and the agents are SIGKILLed at many points during join and renewal; everything
//! converges, and every member ends with exactly one valid intermediate, the one the hub
//! signed last for its current key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use federator_api::names;
use federator_core::cacerts;
use federator_core::cert;
use federator_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_after_sigkills_during_join_and_renewal() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    eprintln!("crash test seed: {seed} (replay with CRASH_SEED={seed})");
    let mut rng = Lcg(seed);
    let members = [("c1", "cluster.local"), ("c2", "c2.example")];
    let mut fed = Federation::start(
        &members,
        &["--cluster-ca-ttl", "24s", "--renew-at-percent", "50"],
    )
    .await;

    // Join while the hub and agents are being killed: serve and the agents start before the
    // joins, and the first kills land during the first CSR/sign/install round.
    fed.start_serve(&[]);
    fed.join("c1");
    fed.start_agent("c1");
    tokio::time::sleep(Duration::from_millis(rng.next(400))).await;
    fed.members
        .get_mut("c1")
        .unwrap()
        .agent
        .as_mut()
        .unwrap()
        .kill();
    fed.join("c2");
    fed.serve.as_mut().unwrap().kill();
    fed.start_agent("c2");
    tokio::time::sleep(Duration::from_millis(rng.next(400))).await;
    fed.start_serve(&[]);
    fed.start_agent("c1");

    // Keep killing for 45s, across at least one renewal per member.
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300 + rng.next(1700))).await;
        match rng.next(3) {
            0 => {
                fed.serve.as_mut().unwrap().kill();
                tokio::time::sleep(Duration::from_millis(rng.next(800))).await;
                fed.start_serve(&[]);
            }
            i => {
                let name = members[(i - 1) as usize].0;
                fed.members
                    .get_mut(name)
                    .unwrap()
                    .agent
                    .as_mut()
                    .unwrap()
                    .kill();
                tokio::time::sleep(Duration::from_millis(rng.next(800))).await;
                fed.start_agent(name);
            }
        }
        kills += 1;
    }
    eprintln!("{kills} SIGKILLs");
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(90))
        .await;

    for (name, _) in members {
        let files = fed.cacerts(name).await.unwrap();
        let report = cacerts::inspect(&files, time::OffsetDateTime::now_utc());
        assert!(report.is_ok(), "{name}: {:?}", report.problems);
        // Exactly one intermediate: one signing certificate, and a chain of it plus the root.
        assert_eq!(
            cert::parse_pem_certificates(&files["ca-cert.pem"], "ca")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(report.chain.len(), 2, "{name}: cluster CA + root");
        assert_eq!(
            files.len(),
            4,
            "{name}: exactly the four istiod files: {:?}",
            files.keys()
        );
        // It is the one the hub signed last, for the key the agent holds.
        let ct = fed.cluster_trust(name).await.unwrap();
        let signed = ct.spec.signed.clone().unwrap();
        let installed = ct.status.clone().unwrap().installed.unwrap();
        assert_eq!(installed.serial, signed.serial, "{name}");
        assert_eq!(report.ca.as_ref().unwrap().serial, signed.serial, "{name}");
        let agent_secret = Api::<Secret>::namespaced(
            fed.members[name].cluster.client().await.unwrap(),
            names::NAMESPACE,
        )
        .get(names::AGENT_KEY_SECRET)
        .await
        .unwrap();
        let data = agent_secret.data.unwrap();
        assert_eq!(
            data["installed-key.pem"].0, files["ca-key.pem"],
            "{name}: cacerts holds the agent's installed key"
        );
        let m = fed.member_cluster(name).await.unwrap().status.unwrap();
        assert_eq!(
            m.ca_serial, signed.serial,
            "{name}: the hub reports what is installed"
        );
    }
}
