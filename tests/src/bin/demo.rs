//! The demo: three real clusters on this machine (the hub runs in cluster-1), `federator
//! init`, three joins (cluster-3 in its own trust domain), `federator serve` and three agents
//! as processes; then `federator status` and a cross-cluster trust check.
//!
//! `scripts/demo` builds what it needs and runs this. `--keep` leaves everything running until
//! Ctrl-C, with the kubeconfigs printed, so you can look around with kubectl. `--pods` gives
//! every cluster a real node (see `docs/testbed.md`) and joins with no agent flags: the agents
//! run as Pods of the project's image, as in a real cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use federator_e2e::{Federation, mint_leaf, verifies};

const MEMBERS: [(&str, &str); 3] = [
    ("cluster-1", "cluster.local"),
    ("cluster-2", "cluster.local"),
    ("cluster-3", "east.example"),
];

#[tokio::main]
async fn main() {
    let keep = std::env::args().any(|a| a == "--keep");
    let pods = std::env::args().any(|a| a == "--pods");
    let started = Instant::now();
    let mut fed = if pods {
        println!(
            "==> starting 3 clusters (real kube-apiserver + etcd on loopback), each with a node (containerd, kubelet, scheduler, controller-manager)"
        );
        Federation::start_with_nodes("cluster-1", &MEMBERS, &[], Some(Duration::from_secs(10)))
            .await
    } else {
        println!("==> starting 3 clusters (real kube-apiserver + etcd on loopback)");
        Federation::start_on("cluster-1", &MEMBERS, &[], None).await
    };
    println!(
        "    ready in {:.1}s; hub in cluster-1",
        started.elapsed().as_secs_f64()
    );
    println!("==> federator init (local root backend) — done");
    for (name, _) in MEMBERS {
        let out = if pods {
            fed.join_default(name)
        } else {
            fed.join(name)
        };
        print!(
            "==> federator join cluster {name}\n    {}",
            out.replace('\n', "\n    ").trim_end()
        );
        println!();
        fed.install_mesh_config(name).await;
    }
    if pods {
        println!("==> starting federator serve (the agents run as Pods)");
        fed.start_serve(&[]);
    } else {
        println!("==> starting federator serve and one cluster-agent per cluster");
        fed.start_serve(&[]);
        for (name, _) in MEMBERS {
            fed.start_agent(name);
        }
    }
    let t = Instant::now();
    fed.wait_healthy(
        &["cluster-1", "cluster-2", "cluster-3"],
        Duration::from_secs(120),
    )
    .await;
    println!(
        "    every cluster installed its plug-in CA in {:.1}s\n",
        t.elapsed().as_secs_f64()
    );

    println!("$ federator status");
    print!("{}", fed.federator_ok(&["status"]));

    println!("\ncross-cluster trust: a workload certificate minted with the ROW cluster's CA,");
    println!("verified (rustls-webpki) against the COLUMN cluster's root-cert.pem:");
    let mut files = Vec::new();
    for (name, _) in MEMBERS {
        files.push(fed.cacerts(name).await.unwrap());
    }
    print!("{:<12}", "");
    for (name, _) in MEMBERS {
        print!("{name:<12}");
    }
    println!();
    let mut all_ok = true;
    for (i, (from, td)) in MEMBERS.iter().enumerate() {
        let leaf = mint_leaf(&files[i], &format!("spiffe://{td}/ns/default/sa/demo"));
        print!("{from:<12}");
        for f in &files {
            let ok = verifies(&leaf, f).is_ok();
            all_ok &= ok;
            print!("{:<12}", if ok { "trusted" } else { "REJECTED" });
        }
        println!();
    }
    if keep {
        println!("\nlogs and kubeconfigs: {}", fed.dir.display());
        for (name, _) in MEMBERS {
            println!(
                "  KUBECONFIG={}  # {name}",
                fed.members[name].cluster.kubeconfig_path().display()
            );
        }
        println!("running; press Ctrl-C to stop everything");
        let _ = tokio::signal::ctrl_c().await;
    }
    println!(
        "==> stopping (total {:.1}s)",
        started.elapsed().as_secs_f64()
    );
    drop(fed);
    if !all_ok {
        std::process::exit(1);
    }
}
