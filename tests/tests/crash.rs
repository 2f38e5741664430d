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
    fed.agent_process("c1").kill();
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
                fed.agent_process(name).kill();
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
        // It is the one the hub signed last, for the key the agent holds, and the hub reports
        // it. Renewals go on every 12 s (a 24 s CA renewed at 50%), so these objects are read
        // one after another until one reading agrees (a renewal between two reads is not a
        // disagreement); a state that never settles fails with the last reading.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match agreement(&fed, name).await {
                Ok(()) => break,
                Err(last) if Instant::now() >= deadline => {
                    panic!("{name}: the hub, the agent and cacerts never agreed: {last}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Whether one reading of the member finds the certificate the hub signed last installed in
/// `cacerts`, with the key the agent holds, and reported on the hub; else what disagreed.
async fn agreement(fed: &Federation, name: &str) -> Result<(), String> {
    let ct = fed.cluster_trust(name).await.ok_or("no ClusterTrust")?;
    let signed = ct.spec.signed.clone().ok_or("nothing signed")?;
    let installed = ct
        .status
        .clone()
        .and_then(|s| s.installed)
        .ok_or("nothing installed")?;
    let files = fed.cacerts(name).await.ok_or("no cacerts")?;
    let report = cacerts::inspect(&files, time::OffsetDateTime::now_utc());
    let in_cacerts = report.ca.as_ref().map(|c| c.serial.clone());
    let agent_secret = Api::<Secret>::namespaced(
        fed.members[name]
            .cluster
            .client()
            .await
            .map_err(|e| e.to_string())?,
        names::NAMESPACE,
    )
    .get(names::AGENT_KEY_SECRET)
    .await
    .map_err(|e| e.to_string())?;
    let agent_key = agent_secret
        .data
        .and_then(|d| d.get("installed-key.pem").cloned())
        .map(|k| k.0);
    let reported = fed
        .member_cluster(name)
        .await
        .and_then(|m| m.status)
        .map(|s| s.ca_serial);
    let agrees = installed.serial == signed.serial
        && in_cacerts.as_deref() == Some(signed.serial.as_str())
        && agent_key.as_ref() == files.get("ca-key.pem")
        && reported.as_deref() == Some(signed.serial.as_str());
    if agrees {
        Ok(())
    } else {
        Err(format!(
            "signed {}, installed {}, in cacerts {in_cacerts:?}, reported {reported:?}, agent key {}",
            signed.serial,
            installed.serial,
            if agent_key.as_ref() == files.get("ca-key.pem") {
                "matches cacerts"
            } else {
                "differs from cacerts"
            }
        ))
    }
}
