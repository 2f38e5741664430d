//! The Helm chart's RBAC, proven against a real kube-apiserver: its CRDs, ServiceAccounts, Roles
//! and bindings (as `helm template` renders them) are applied to the hub cluster; `federator
//! init` then runs with the init Job's own flags and nothing but the init ServiceAccount's token
//! — so it writes no CRD (it would be refused), which also shows that the chart's `crds/` are
//! what `init` compares them with, apiserver defaults included — and again, changing nothing;
//! `federator serve --leader-elect` runs with nothing but the hub ServiceAccount's token and
//! brings two members (one in its own trust domain, so a second local root is written into the
//! roots Secret) to a healthy federation, with no request refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use federator_api::names;
use federator_e2e::examples::{apply_rbac, create, find, flag, render, repo, strings};
use federator_e2e::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use testbed::{Process, ProcessSpec};

/// A kubeconfig file for ServiceAccount `sa` of `federator-system` (a token, nothing else).
async fn service_account_kubeconfig(fed: &Federation, sa: &str) -> std::path::PathBuf {
    let token = fed
        .hub
        .token_request(names::NAMESPACE, sa, &[], Some(3600))
        .await
        .unwrap();
    let path = fed.dir.join(format!("{sa}-sa.kubeconfig"));
    fed.hub.write_kubeconfig_for_token(&token, &path).unwrap();
    path
}

/// The CRDs' resourceVersions, to see that nothing wrote them.
async fn crd_versions(api: &Api<CustomResourceDefinition>, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for n in names {
        out.push(api.get(n).await.unwrap().metadata.resource_version.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_rbac_is_enough_for_init_and_serve() {
    let mut fed = Federation::without_init(
        "hub",
        &[("c1", "cluster.local"), ("c2", "c2.example")],
        None,
    )
    .await;
    let admin = fed.hub.client().await.unwrap();
    let docs = render("values.yaml", &["--include-crds"]);

    // What `helm install -n federator-system --create-namespace` creates before the hooks (the
    // namespace as the kustomize base has it).
    let namespace =
        std::fs::read_to_string(repo().join("examples/kustomize/base/namespace.yaml")).unwrap();
    create(
        &Api::<Namespace>::all(admin.clone()),
        &serde_yaml::from_str(&namespace).unwrap(),
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    let mut crd_names = Vec::new();
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
    {
        crd_names.push(d["metadata"]["name"].as_str().unwrap().to_owned());
        create(&crds, d).await;
    }
    apply_rbac(&admin, &docs).await;
    assert_eq!(crd_names.len(), 4);
    for n in &crd_names {
        wait_for(
            &format!("CRD {n} established"),
            Duration::from_secs(30),
            || async {
                let c = crds.get(n).await.ok()?;
                c.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    let before = crd_versions(&crds, &crd_names).await;

    // init, with the Job's flags and the init ServiceAccount's token only.
    let job = find(&docs, "Job", "federator-init");
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "federator-init");
    let args = strings(&pod["containers"][0]["args"]);
    assert_eq!(flag(&args, "--root"), Some("local"));
    let init_kubeconfig = service_account_kubeconfig(&fed, "federator-init").await;
    let run_init = || {
        let out = std::process::Command::new(bin("federator"))
            .args(&args)
            .env("FEDERATOR_HUB_KUBECONFIG", &init_kubeconfig)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "init as federator-init failed: {text}"
        );
        text
    };
    let feds: Api<federator_api::hub::Federation> =
        Api::namespaced(admin.clone(), names::NAMESPACE);
    let first = run_init();
    assert_eq!(
        crd_versions(&crds, &crd_names).await,
        before,
        "init wrote a CRD: the chart's crds/ differ from init's definitions (as the apiserver stores them)"
    );
    let fed_obj = feds.get(names::FEDERATION).await.unwrap();
    let again = run_init();
    assert_eq!(crd_versions(&crds, &crd_names).await, before);
    let fed_again = feds.get(names::FEDERATION).await.unwrap();
    assert_eq!(
        fed_obj.metadata.resource_version, fed_again.metadata.resource_version,
        "a second init changes nothing: {first} / {again}"
    );

    // serve, with the hub ServiceAccount's token only.
    let deployment = find(&docs, "Deployment", "federator");
    let sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .unwrap();
    let serve_kubeconfig = service_account_kubeconfig(&fed, sa).await;
    let serve_log = fed.dir.join("serve-sa.log");
    fed.serve = Some(
        Process::spawn(
            ProcessSpec::new("federator-serve-sa", bin("federator"), serve_log.clone())
                .args([
                    "serve",
                    "--leader-elect",
                    "--identity",
                    "hub-0",
                    "--log-level",
                    "info",
                ])
                .env("FEDERATOR_HUB_KUBECONFIG", &serve_kubeconfig),
        )
        .unwrap(),
    );
    for m in ["c1", "c2"] {
        fed.join(m);
        fed.start_agent(m);
    }
    fed.wait_healthy(&["c1", "c2"], Duration::from_secs(120))
        .await;
    let events = events_about(&admin, "MemberCluster", "c1").await;
    assert!(
        events.iter().any(|(reason, _)| reason == "CsrSigned"),
        "serve may publish events: {events:?}"
    );
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(admin.clone(), names::NAMESPACE);
    let holder = lease
        .get(names::LEADER_LEASE)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("hub-0"));
    let log = std::fs::read_to_string(&serve_log).unwrap();
    // The API server's refusal reads "... is forbidden: User ... cannot ...".
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "serve was refused a request with the chart's RBAC:\n{log}"
    );
}
