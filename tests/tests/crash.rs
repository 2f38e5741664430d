//! The hub and the agents are SIGKILLed at many points during join and renewal; everything
//! converges, and every member ends with exactly one valid intermediate, the one the hub
//! signed last for its current key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use federator_e2e::*;

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

    // Each member runs on the one the hub signed last, for the key the agent holds, and the
    // hub reports it. Renewals go on every 12 s (a 24 s CA renewed at 50%), so the objects are
    // read until one reading agrees (a renewal between two reads is not a disagreement).
    for (name, _) in members {
        crash::wait_agreement(&fed, name, Duration::from_secs(60)).await;
    }
}
