//! Static proofs of `examples/`, with the real tools (`tools/build.sh ops` builds them; a
//! missing tool fails the test, naming that command):
//!
//! * the Helm chart passes `helm lint` and renders with `helm template` for every values file,
//!   and the renderings hold what they must (2 leader-elected replicas, probes, the hardened
//!   pod, the `init` Job's flags and Secret mounts, no Secret from values); a namespace other
//!   than `federator-system` and incomplete root settings fail with a message;
//! * the chart's `crds/` are exactly what the API types define (so the chart cannot drift from
//!   the CRDs `federator init` installs);
//! * `examples/kustomize/` is the chart's rendering (one set of manifests) and every overlay
//!   renders with `kubectl kustomize`;
//! * the alerts pass `promtool check rules` and their unit tests (`promtool test rules`), and
//!   the PrometheusRule the chart renders holds exactly those rules;
//! * the Grafana dashboard is valid JSON that queries only metrics federator exports.
//!
//! Generated files (`crds/`, `examples/kustomize/**/generated.yaml`) are rewritten instead of
//! compared with `FEDERATOR_UPDATE_EXAMPLES=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use federator_api::names;
use federator_e2e::examples::*;
use serde_yaml::Value;
use testbed::Binaries;

const VALUES_FILES: &[&str] = &[
    "values.yaml",
    "values-import.yaml",
    "values-vault-token.yaml",
    "values-vault-approle.yaml",
    "values-vault-kubernetes.yaml",
];

fn updating() -> bool {
    std::env::var_os("FEDERATOR_UPDATE_EXAMPLES").is_some_and(|v| v == "1")
}

fn init_job_args(docs: &[Value]) -> Vec<String> {
    strings(
        &find(docs, "Job", "federator-init")["spec"]["template"]["spec"]["containers"][0]["args"],
    )
}

#[test]
fn the_chart_lints_and_renders_for_every_values_file() {
    for values in VALUES_FILES {
        let out = ok(tool(Binaries::helm)
            .arg("lint")
            .arg(chart())
            .args(["--strict", "--namespace", names::NAMESPACE])
            .args([
                "--kube-version",
                testbed::binaries::KUBERNETES_VERSION,
                "-f",
            ])
            .arg(chart().join(values)));
        assert!(out.contains("0 chart(s) failed"), "{values}: {out}");
        let docs = render(values, &[]);
        // No Secret is ever rendered: secrets come from existing Secrets, by name.
        assert!(
            !docs.iter().any(|d| d["kind"] == "Secret"),
            "{values} renders a Secret"
        );
        for d in &docs {
            if d["metadata"]["namespace"].is_string() {
                assert_eq!(
                    d["metadata"]["namespace"],
                    names::NAMESPACE,
                    "{values}: {d:?}"
                );
            }
        }
        let hub = find(&docs, "Deployment", "federator");
        assert_eq!(hub["spec"]["replicas"], 2, "{values}");
        find(&docs, "Job", "federator-init");
    }
}

#[test]
fn the_hub_deployment_is_leader_elected_probed_and_hardened() {
    let docs = render("values.yaml", &[]);
    let hub = find(&docs, "Deployment", "federator");
    let pod = &hub["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve");
    assert!(args.contains(&"--leader-elect".to_owned()), "{args:?}");
    assert_eq!(flag(&args, "--metrics-addr"), Some("0.0.0.0:9090"));
    assert_eq!(flag(&args, "--log-format"), Some("json"));
    assert_eq!(
        c["image"].as_str(),
        Some(names::FEDERATOR_IMAGE),
        "the chart's default image is the one this build produces"
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["env"][0]["name"], "POD_NAME", "--identity reads POD_NAME");
    assert_eq!(
        c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 9090);
    assert_eq!(c["ports"][0]["name"], "metrics");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        pod["securityContext"]["runAsUser"],
        federator_api::agent::RUN_AS
    );
    assert_eq!(pod["serviceAccountName"], "federator");
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap() >= 15,
        "time to release the Lease"
    );
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = find(&docs, "PodDisruptionBudget", "federator");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        hub["spec"]["selector"]["matchLabels"]
    );
    let svc = find(&docs, "Service", "federator-metrics");
    assert_eq!(svc["spec"]["ports"][0]["name"], "metrics");
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    let sa = find(&docs, "ServiceAccount", "federator");
    assert_eq!(sa["automountServiceAccountToken"], true);
    // The hub's rights are a Role in its namespace, never cluster-wide.
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["subjects"][0]["name"] == "federator"),
        "the hub has no cluster-wide rights"
    );
    let role = find(&docs, "Role", "federator");
    let rules = role["rules"].as_sequence().unwrap();
    let has = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            strings(&r["apiGroups"]).contains(&group.to_owned())
                && strings(&r["resources"]).contains(&resource.to_owned())
                && strings(&r["verbs"]).contains(&verb.to_owned())
        })
    };
    assert!(has("coordination.k8s.io", "leases", "patch"));
    assert!(has("federator.io", "memberclusters/status", "patch"));
    assert!(has("events.k8s.io", "events", "create"));
    assert!(
        !has("", "secrets", "delete"),
        "serve never deletes a Secret"
    );
    // serve writes one field of the spec (the Vault issuer, at the end of a rotation), and
    // only of the Federation `default`.
    let spec_writes: Vec<&Value> = rules
        .iter()
        .filter(|r| {
            strings(&r["resources"]).contains(&"federations".to_owned())
                && strings(&r["verbs"])
                    .iter()
                    .any(|v| v != "get" && v != "list" && v != "watch")
        })
        .collect();
    assert_eq!(spec_writes.len(), 1, "{spec_writes:?}");
    assert_eq!(strings(&spec_writes[0]["verbs"]), ["patch"]);
    assert_eq!(strings(&spec_writes[0]["resourceNames"]), ["default"]);

    // Options: required anti-affinity, no PDB, text logs.
    let docs = render(
        "values.yaml",
        &[
            "--set",
            "podAntiAffinity=required,podDisruptionBudget.enabled=false,serve.logFormat=text,replicas=3",
        ],
    );
    let hub = find(&docs, "Deployment", "federator");
    assert_eq!(hub["spec"]["replicas"], 3);
    let pod = &hub["spec"]["template"]["spec"];
    assert!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"]
            == "kubernetes.io/hostname"
    );
    assert_eq!(
        flag(&strings(&pod["containers"][0]["args"]), "--log-format"),
        Some("text")
    );
    assert!(!docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"));
}

#[test]
fn the_init_job_passes_the_root_settings_and_mounts_only_named_secrets() {
    // local (the default)
    let docs = render("values.yaml", &[]);
    let job = find(&docs, "Job", "federator-init");
    let annotations = &job["metadata"]["annotations"];
    assert_eq!(annotations["helm.sh/hook"], "post-install,post-upgrade");
    assert_eq!(
        annotations["helm.sh/hook-delete-policy"],
        "before-hook-creation"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "federator-init");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let args = init_job_args(&docs);
    assert_eq!(args[0], "init");
    assert_eq!(flag(&args, "--root"), Some("local"));
    assert_eq!(flag(&args, "--trust-domain"), Some("cluster.local"));
    assert_eq!(flag(&args, "--cluster-ca-ttl"), Some("720h"));
    let secret_volumes = |pod: &Value| {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .filter(|v| !v["secret"].is_null())
            .map(|v| v["secret"]["secretName"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(secret_volumes(pod).is_empty(), "local needs no Secret");
    // init's rights: reads of its namespace and CRDs, no CRD writes.
    let cr = find(&docs, "ClusterRole", "federator-init");
    for rule in cr["rules"].as_sequence().unwrap() {
        let verbs = strings(&rule["verbs"]);
        assert!(
            verbs
                .iter()
                .all(|v| ["get", "list", "watch"].contains(&v.as_str())),
            "init only reads cluster-scoped objects: {verbs:?}"
        );
        assert!(
            !strings(&rule["resourceNames"]).is_empty(),
            "named objects only"
        );
    }
    let crd_names: Vec<String> = federator_api::crds()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(strings(&cr["rules"][1]["resourceNames"]), crd_names);

    // import: the CA and key files come from the named Secret.
    let docs = render("values-import.yaml", &[]);
    let args = init_job_args(&docs);
    let pod = &find(&docs, "Job", "federator-init")["spec"]["template"]["spec"];
    assert_eq!(flag(&args, "--root"), Some("import"));
    assert_eq!(flag(&args, "--cert"), Some("/etc/federator/import/tls.crt"));
    assert_eq!(flag(&args, "--key"), Some("/etc/federator/import/tls.key"));
    assert_eq!(secret_volumes(pod), ["federator-import-ca"]);
    assert_eq!(pod["volumes"][1]["secret"]["defaultMode"], 0o440);
    assert_eq!(
        pod["containers"][0]["volumeMounts"][1]["mountPath"],
        "/etc/federator/import"
    );

    // vault, token auth: the token file from the named Secret, the CA from a ConfigMap.
    let docs = render("values-vault-token.yaml", &[]);
    let args = init_job_args(&docs);
    let pod = &find(&docs, "Job", "federator-init")["spec"]["template"]["spec"];
    assert_eq!(flag(&args, "--root"), Some("vault"));
    assert_eq!(flag(&args, "--vault-auth"), Some("token"));
    assert_eq!(
        flag(&args, "--vault-token-file"),
        Some("/etc/federator/vault/token")
    );
    assert_eq!(
        flag(&args, "--vault-ca-file"),
        Some("/etc/federator/vault-ca/ca.crt")
    );
    assert!(flag(&args, "--vault-addr").unwrap().starts_with("https://"));
    assert_eq!(secret_volumes(pod), ["federator-vault-token"]);
    let volumes = pod["volumes"].as_sequence().unwrap();
    assert_eq!(volumes[2]["configMap"]["name"], "vault-ca");
    let mounts = pod["containers"][0]["volumeMounts"].as_sequence().unwrap();
    assert!(mounts[1..].iter().all(|m| m["readOnly"] == true));

    // vault, AppRole: the role ID is a flag (not a secret), the secret ID a mounted file.
    let docs = render("values-vault-approle.yaml", &[]);
    let args = init_job_args(&docs);
    let pod = &find(&docs, "Job", "federator-init")["spec"]["template"]["spec"];
    assert_eq!(flag(&args, "--vault-auth"), Some("approle"));
    assert!(flag(&args, "--vault-role-id").is_some());
    assert_eq!(
        flag(&args, "--vault-secret-id-file"),
        Some("/etc/federator/vault/secret-id")
    );
    assert_eq!(secret_volumes(pod), ["federator-vault-approle", "vault-ca"]);

    // vault, Kubernetes auth: no credential at all, the ServiceAccount token logs in.
    let docs = render("values-vault-kubernetes.yaml", &[]);
    let args = init_job_args(&docs);
    assert_eq!(flag(&args, "--vault-auth"), Some("kubernetes"));
    assert_eq!(flag(&args, "--vault-role"), Some("federator-hub"));
    assert!(flag(&args, "--vault-token-file").is_none());
    let pod = &find(&docs, "Job", "federator-init")["spec"]["template"]["spec"];
    assert!(
        secret_volumes(pod).is_empty(),
        "Kubernetes auth needs no Secret"
    );
}

/// `bundleEndpoint.enabled`: every replica serves the SPIFFE bundles with the named TLS
/// Secret mounted (the kubelet updates it, serve re-reads it), behind a Service; off by default.
#[test]
fn the_bundle_endpoint_is_a_service_with_the_named_certificate() {
    let docs = render("values.yaml", &[]);
    let hub = find(&docs, "Deployment", "federator");
    let args = strings(&hub["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(
        flag(&args, "--bundle-endpoint-addr"),
        None,
        "off by default"
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["metadata"]["name"] == "federator-bundle-endpoint"),
        "no Service by default"
    );
    let docs = render(
        "values.yaml",
        &[
            "--set",
            "bundleEndpoint.enabled=true,bundleEndpoint.tlsSecretName=federator-bundle-endpoint-tls,bundleEndpoint.refreshHint=2m",
        ],
    );
    let hub = find(&docs, "Deployment", "federator");
    let pod = &hub["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    assert_eq!(flag(&args, "--bundle-endpoint-addr"), Some("0.0.0.0:8443"));
    assert_eq!(flag(&args, "--bundle-refresh-hint"), Some("2m"));
    let cert = flag(&args, "--bundle-endpoint-cert").unwrap();
    let key = flag(&args, "--bundle-endpoint-key").unwrap();
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "bundle-endpoint-tls")
        .unwrap();
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(cert, format!("{dir}/tls.crt"));
    assert_eq!(key, format!("{dir}/tls.key"));
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "bundle-endpoint-tls")
        .unwrap();
    assert_eq!(
        volume["secret"]["secretName"],
        "federator-bundle-endpoint-tls"
    );
    let svc = find(&docs, "Service", "federator-bundle-endpoint");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "bundles");
    assert!(
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "bundles" && p["containerPort"] == 8443)
    );
    assert_eq!(flag(&args, "--bundle-endpoint-profile"), Some("https_web"));

    // https_spiffe: the hub issues the endpoint's SVID itself; no certificate is mounted.
    let docs = render(
        "values.yaml",
        &[
            "--set",
            "bundleEndpoint.enabled=true,bundleEndpoint.profile=https_spiffe,bundleEndpoint.spiffeId=spiffe://east.example/federator/bundle-endpoint,bundleEndpoint.svidTtl=12h",
        ],
    );
    let hub = find(&docs, "Deployment", "federator");
    let pod = &hub["spec"]["template"]["spec"];
    let args = strings(&pod["containers"][0]["args"]);
    assert_eq!(
        flag(&args, "--bundle-endpoint-profile"),
        Some("https_spiffe")
    );
    assert_eq!(
        flag(&args, "--bundle-endpoint-spiffe-id"),
        Some("spiffe://east.example/federator/bundle-endpoint")
    );
    assert_eq!(flag(&args, "--bundle-endpoint-svid-ttl"), Some("12h"));
    assert_eq!(flag(&args, "--bundle-endpoint-cert"), None);
    assert!(
        !pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "bundle-endpoint-tls"),
        "no TLS Secret to mount with https_spiffe"
    );
    find(&docs, "Service", "federator-bundle-endpoint");
}

#[test]
fn bad_values_fail_rendering_with_a_message() {
    let err = fails(
        tool(Binaries::helm)
            .arg("template")
            .arg("federator")
            .arg(chart())
            .args(["--kube-version", testbed::binaries::KUBERNETES_VERSION])
            .args(["--namespace", "default"]),
    );
    assert!(
        err.contains("federator-system") && err.contains("not \"default\""),
        "{err}"
    );
    for (set, message) in [
        ("root.type=import", "root.import.secretName"),
        ("root.type=vault", "root.vault.address"),
        (
            "root.type=vault,root.vault.address=https://v:8200",
            "root.vault.token.secretName",
        ),
        (
            "root.type=vault,root.vault.address=https://v:8200,root.vault.auth=kubernetes",
            "root.vault.kubernetes.role",
        ),
        ("root.type=hsm", "root.type must be local, import or vault"),
        (
            "serve.logFormat=xml",
            "serve.logFormat must be json or text",
        ),
        (
            "bundleEndpoint.enabled=true",
            "bundleEndpoint.tlsSecretName",
        ),
        (
            "bundleEndpoint.enabled=true,bundleEndpoint.profile=https_spiffe",
            "bundleEndpoint.spiffeId",
        ),
        (
            "bundleEndpoint.enabled=true,bundleEndpoint.profile=mtls",
            "bundleEndpoint.profile must be https_web or https_spiffe",
        ),
    ] {
        let err = fails(&mut helm_template(&["--set", set]));
        assert!(err.contains(message), "--set {set}: {err}");
    }
}

/// The CRDs the API types define, as the chart's `crds/` holds them (one file each).
fn crd_files() -> Vec<(PathBuf, String)> {
    federator_api::crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap();
            let text = format!(
                "# Generated from the federator-api types (what `federator init` installs); tests/tests/examples.rs\n# fails when this differs from them (FEDERATOR_UPDATE_EXAMPLES=1 rewrites it).\n{}",
                serde_yaml::to_string(&crd).unwrap()
            );
            (chart().join("crds").join(format!("{name}.yaml")), text)
        })
        .collect()
}

/// Compares (or, with FEDERATOR_UPDATE_EXAMPLES=1, writes) generated files.
fn check_generated(files: &[(PathBuf, String)]) {
    for (path, want) in files {
        if updating() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == *want,
            "{} differs from what it is generated from; run FEDERATOR_UPDATE_EXAMPLES=1 cargo nextest run -p federator-e2e --test examples and commit the result",
            path.display()
        );
    }
}

#[test]
fn the_chart_crds_are_the_api_types() {
    let files = crd_files();
    check_generated(&files);
    let in_dir = std::fs::read_dir(chart().join("crds")).unwrap().count();
    assert_eq!(in_dir, files.len(), "crds/ holds only the generated CRDs");
}

/// `examples/kustomize/`: the base is the hub without `init`, each overlay adds the init Job
/// for its root, all rendered from the chart.
fn kustomize_files() -> Vec<(PathBuf, String)> {
    let dir = repo().join("examples/kustomize");
    let header = "# Generated from examples/helm/federator by tests/tests/examples.rs (FEDERATOR_UPDATE_EXAMPLES=1\n# rewrites it; the test fails when it differs from the chart's rendering). Do not edit: change\n# the chart, or patch it in your own overlay.\n";
    let init = |values: &str| {
        render_text(
            values,
            &[
                "--show-only",
                "templates/init-rbac.yaml",
                "--show-only",
                "templates/init-job.yaml",
            ],
        )
    };
    vec![
        (
            dir.join("base/generated.yaml"),
            format!(
                "{header}{}",
                render_text(
                    "values.yaml",
                    &["--include-crds", "--set", "init.enabled=false"]
                )
            ),
        ),
        (
            dir.join("overlays/local/generated.yaml"),
            format!("{header}{}", init("values.yaml")),
        ),
        (
            dir.join("overlays/vault/generated.yaml"),
            format!("{header}{}", init("values-vault-token.yaml")),
        ),
    ]
}

#[test]
fn the_kustomizations_are_the_chart_and_render() {
    check_generated(&kustomize_files());
    for overlay in ["local", "vault"] {
        let out = ok(tool(Binaries::kubectl)
            .arg("kustomize")
            .arg(repo().join("examples/kustomize/overlays").join(overlay)));
        let docs = documents(&out);
        let hub = find(&docs, "Deployment", "federator");
        assert_eq!(hub["spec"]["replicas"], 2, "{overlay}");
        find(
            &docs,
            "CustomResourceDefinition",
            "federations.federator.io",
        );
        let job = find(&docs, "Job", "federator-init");
        let args = strings(&job["spec"]["template"]["spec"]["containers"][0]["args"]);
        assert_eq!(flag(&args, "--root"), Some(overlay), "{overlay}");
        find(&docs, "Role", "federator-init");
        assert!(!docs.iter().any(|d| d["kind"] == "Secret"), "{overlay}");
    }
}

fn rules_file() -> PathBuf {
    chart().join("files/federator.rules.yaml")
}

#[test]
fn the_alerts_pass_promtool_and_their_unit_tests() {
    let out = ok(tool(Binaries::promtool)
        .arg("check")
        .arg("rules")
        .arg(rules_file()));
    assert!(out.contains("SUCCESS"), "{out}");
    let out = ok(tool(Binaries::promtool)
        .arg("test")
        .arg("rules")
        .arg(repo().join("examples/prometheus/federator.rules.test.yaml")));
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test in which it fires.
    let rules: Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    let tests: Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/prometheus/federator.rules.test.yaml"))
            .unwrap(),
    )
    .unwrap();
    let firing: Vec<&Value> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .filter(|c| !c["exp_alerts"].as_sequence().unwrap().is_empty())
        .map(|c| &c["alertname"])
        .collect();
    let quiet = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap())
        .filter(|c| c["exp_alerts"].as_sequence().unwrap().is_empty())
        .count();
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            alerts += 1;
            assert!(
                firing.contains(&&rule["alert"]),
                "no firing test for {:?}",
                rule["alert"]
            );
            let description = rule["annotations"]["description"].as_str().unwrap();
            assert!(
                ["federator ", "kubectl "]
                    .iter()
                    .any(|c| description.contains(c)),
                "{:?}: the description names what to run",
                rule["alert"]
            );
        }
    }
    assert!(alerts >= 9, "{alerts}");
    assert!(quiet >= alerts, "a quiet case per alert at least: {quiet}");

    // The chart's PrometheusRule holds exactly these rules.
    let docs = render(
        "values.yaml",
        &["--set", "metrics.prometheusRule.enabled=true"],
    );
    let rule = find(&docs, "PrometheusRule", "federator");
    assert_eq!(rule["spec"]["groups"], rules["groups"]);
}

#[test]
fn the_servicemonitor_and_dashboard_render_and_the_dashboard_uses_exported_metrics() {
    let docs = render(
        "values.yaml",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true,metrics.grafanaDashboard.enabled=true",
        ],
    );
    let sm = find(&docs, "ServiceMonitor", "federator");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    let cm = find(&docs, "ConfigMap", "federator-grafana-dashboard");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = std::fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap();
    assert_eq!(
        cm["data"]["federator.json"].as_str().unwrap().trim(),
        text.trim()
    );
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8, "{}", panels.len());
    // Every query names only metrics federator exports (docs/operations.md, "Metrics").
    let exported = [
        "federator_leader",
        "federator_members",
        "federator_bundle_generation",
        "federator_build_info",
        "federator_member_ready",
        "federator_member_ca_expiry_timestamp_seconds",
        "federator_member_bundle_generation",
        "federator_member_last_contact_timestamp_seconds",
        "federator_signed_total",
        "federator_sign_failures_total",
        "federator_root_expiry_timestamp_seconds",
        "federator_rotation_phase",
        "federator_rotation_phase_start_timestamp_seconds",
        "federator_agent_build_info",
        "federator_agent_ca_expiry_timestamp_seconds",
        "federator_agent_bundle_generation",
        "federator_agent_cacerts_writes_total",
        "federator_agent_reconcile_errors_total",
        "federator_agent_remote_secrets",
    ];
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("federator_") {
                    assert!(exported.contains(&word), "{expr}: {word} is not exported");
                }
            }
        }
    }
}

#[test]
fn the_chart_version_is_the_workspace_version() {
    let chart_yaml: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart_yaml["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
}
