//! Least privilege as a table: `docs/security.md` lists every right of every identity
//! federator creates or runs as — the hub in a member, the agent, the reader (in a member), the
//! hub and its init Job (in the hub cluster, from the Helm chart) — one row per resource, each
//! with its reason. Two tests hold the table to the truth:
//!
//! * the table is exactly the rules `join` installs (`federator_api::rbac`) and the chart
//!   renders: a rule added, widened or dropped in either fails until the table says so;
//! * against a real kube-apiserver, each identity asks with its own token
//!   (SelfSubjectAccessReview) for every verb on every resource of its rows and on a set of
//!   sensitive ones, in its namespaces and others, by its names and another's — and the answer
//!   must be exactly what the table grants: nothing it lists is refused, nothing it does not
//!   list is allowed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use federator_api::{names, rbac};
use federator_e2e::examples::{apply_rbac, render, repo};
use federator_e2e::*;
use futures::{StreamExt, stream};
use k8s_openapi::api::authorization::v1::ResourceAttributes;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::PolicyRule;
use kube::api::Api;
use serde_yaml::Value;

/// The identities of the table, as its first column names them.
const HUB_IN_MEMBER: &str = "hub in a member";
const AGENT: &str = "agent";
const READER: &str = "reader";
const HUB: &str = "hub";
const INIT: &str = "init Job";

/// Where a row applies: a namespace, or the whole cluster (a ClusterRoleBinding).
const CLUSTER: &str = "(cluster)";

/// One row of the table: what `identity` may do with one resource in one place.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    identity: String,
    scope: String,
    group: String,
    resource: String,
    names: BTreeSet<String>,
    verbs: BTreeSet<String>,
}

impl Row {
    /// Whether this row grants a request, as Kubernetes RBAC decides it: the verb, group and
    /// resource match; a namespaced row only in its namespace; a row with names only for a
    /// request naming one of them.
    fn grants(&self, p: &Probe) -> bool {
        self.verbs.contains(p.verb)
            && self.group == p.group
            && self.resource == p.resource
            && (self.scope == CLUSTER || Some(self.scope.as_str()) == p.namespace.as_deref())
            && (self.names.is_empty() || p.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }

    fn markdown(&self) -> String {
        let list = |xs: &BTreeSet<String>| {
            if xs.is_empty() {
                "—".to_owned()
            } else {
                xs.iter().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!(
            "| {} | {} | {group} | {} | {} | {} | … |",
            self.identity,
            self.scope,
            self.resource,
            list(&self.names),
            list(&self.verbs)
        )
    }
}

/// Rows from RBAC rules, one per (group, resource, names) with the union of their verbs.
fn rows_of(identity: &str, scope: &str, rules: &[PolicyRule]) -> Vec<Row> {
    let mut merged: BTreeMap<(String, String, BTreeSet<String>), BTreeSet<String>> =
        BTreeMap::new();
    for r in rules {
        let names: BTreeSet<String> = r.resource_names.iter().flatten().cloned().collect();
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                merged
                    .entry((g.clone(), res.clone(), names.clone()))
                    .or_default()
                    .extend(r.verbs.iter().cloned());
            }
        }
    }
    merged
        .into_iter()
        .map(|((group, resource, names), verbs)| Row {
            identity: identity.to_owned(),
            scope: scope.to_owned(),
            group,
            resource,
            names,
            verbs,
        })
        .collect()
}

fn role_rows(identity: &str, role: &k8s_openapi::api::rbac::v1::Role) -> Vec<Row> {
    rows_of(
        identity,
        role.metadata.namespace.as_deref().unwrap(),
        role.rules.as_deref().unwrap_or_default(),
    )
}

/// Every right in a member, as `join` installs it (with remote secrets, the default).
fn member_rows() -> Vec<Row> {
    let mut rows = role_rows(HUB_IN_MEMBER, &rbac::hub_role_for(true));
    for role in rbac::agent_roles_for(true) {
        rows.extend(role_rows(AGENT, &role));
    }
    rows.extend(role_rows(READER, &rbac::reader_role()));
    rows.extend(rows_of(
        READER,
        CLUSTER,
        rbac::reader_cluster_role().rules.as_deref().unwrap(),
    ));
    rows
}

/// Every right in the hub cluster, as the chart renders it: the rules of each Role and
/// ClusterRole bound to the hub's or the init Job's ServiceAccount.
fn chart_rows(docs: &[Value]) -> Vec<Row> {
    let find = |kind: &str, name: &str, ns: Option<&str>| {
        docs.iter()
            .find(|d| {
                d["kind"] == kind
                    && d["metadata"]["name"] == name
                    && ns.is_none_or(|ns| d["metadata"]["namespace"] == ns)
            })
            .unwrap_or_else(|| panic!("the chart has no {kind} {name}"))
    };
    let mut rows = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let scope = binding_ns.unwrap_or(CLUSTER);
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let role = find(
            role_kind,
            role_name,
            if role_kind == "Role" {
                binding_ns
            } else {
                None
            },
        );
        let rules: Vec<PolicyRule> = serde_yaml::from_value(role["rules"].clone()).unwrap();
        for subject in binding["subjects"].as_sequence().unwrap() {
            assert_eq!(subject["kind"], "ServiceAccount", "{binding:?}");
            let identity = match subject["name"].as_str().unwrap() {
                "federator" => HUB,
                "federator-init" => INIT,
                other => panic!("the chart binds an unknown ServiceAccount {other}"),
            };
            rows.extend(rows_of(identity, scope, &rules));
        }
    }
    rows
}

/// The rows of the table in `docs/security.md` ("Every right, by identity").
fn documented_rows() -> Vec<Row> {
    let text = std::fs::read_to_string(repo().join("docs/security.md")).unwrap();
    let section = text
        .split("\n## Every right, by identity\n")
        .nth(1)
        .expect("docs/security.md has a section \"## Every right, by identity\"");
    let section = section.split("\n## ").next().unwrap();
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().replace('`', ""))
            .collect()
    };
    let list = |cell: &str| -> BTreeSet<String> {
        if cell == "—" {
            BTreeSet::new()
        } else {
            cell.split(',').map(|s| s.trim().to_owned()).collect()
        }
    };
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2) // the header and its separator
        .map(|line| {
            let c = cells(line);
            assert_eq!(c.len(), 7, "a row of 7 cells: {line}");
            assert!(!c[6].is_empty(), "every row says why: {line}");
            Row {
                identity: c[0].clone(),
                scope: c[1].clone(),
                group: if c[2] == "core" {
                    String::new()
                } else {
                    c[2].clone()
                },
                resource: c[3].clone(),
                names: list(&c[4]),
                verbs: list(&c[5]),
            }
        })
        .collect()
}

#[test]
fn the_table_in_security_md_is_every_rule_join_and_the_chart_install() {
    let documented: BTreeSet<Row> = documented_rows().into_iter().collect();
    let mut actual: BTreeSet<Row> = member_rows().into_iter().collect();
    actual.extend(chart_rows(&render("values.yaml", &[])));
    let missing: Vec<String> = actual.difference(&documented).map(Row::markdown).collect();
    let stale: Vec<String> = documented.difference(&actual).map(Row::markdown).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/security.md's table differs from the rules.\nRows to add (with their reason):\n{}\n\
         Rows to remove:\n{}",
        missing.join("\n"),
        stale.join("\n")
    );
}

/// One question to the API server.
#[derive(Clone, Debug)]
struct Probe {
    verb: &'static str,
    group: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// Verbs that may name an object in a request.
const NAMED_VERBS: [&str; 6] = ["get", "list", "watch", "update", "patch", "delete"];

/// Resources every identity is asked about besides its own: what an attacker holding the
/// identity would want.
fn sensitive() -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    vec![
        ("", "secrets", &VERBS),
        ("", "pods", &VERBS),
        ("", "pods/exec", &["create", "get"]),
        ("", "serviceaccounts/token", &["create"]),
        ("", "nodes/proxy", &["get", "create"]),
        ("", "users", &["impersonate"]),
        ("", "serviceaccounts", &["impersonate", "create"]),
        (
            "rbac.authorization.k8s.io",
            "roles",
            &["create", "escalate", "bind"],
        ),
        (
            "rbac.authorization.k8s.io",
            "clusterroles",
            &["create", "escalate", "bind"],
        ),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            &["create", "update"],
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            &["create", "update"],
        ),
        ("apps", "deployments", &VERBS),
    ]
}

/// Every question for one identity: each verb on each of its resources and the sensitive ones,
/// in each namespace any row names plus two others and cluster-wide, unnamed and by each name
/// a row names plus one no row names.
fn probes(rows: &[&Row]) -> Vec<Probe> {
    let mut resources: BTreeMap<(String, String), BTreeSet<&'static str>> = BTreeMap::new();
    for r in rows {
        resources
            .entry((r.group.clone(), r.resource.clone()))
            .or_default()
            .extend(VERBS);
    }
    for (g, res, verbs) in sensitive() {
        resources
            .entry((g.to_owned(), res.to_owned()))
            .or_default()
            .extend(verbs.iter().copied());
    }
    let mut namespaces: BTreeSet<Option<String>> = rows
        .iter()
        .filter(|r| r.scope != CLUSTER)
        .map(|r| Some(r.scope.clone()))
        .collect();
    namespaces.extend([
        None,
        Some("default".to_owned()),
        Some("kube-system".to_owned()),
        Some(names::NAMESPACE.to_owned()),
        Some(names::ISTIO_NAMESPACE.to_owned()),
    ]);
    let mut out = Vec::new();
    for ((group, resource), verbs) in resources {
        let mut object_names: BTreeSet<Option<String>> = rows
            .iter()
            .filter(|r| r.group == group && r.resource == resource)
            .flat_map(|r| r.names.iter().cloned().map(Some))
            .collect();
        object_names.extend([None, Some("not-federators".to_owned())]);
        for ns in &namespaces {
            for name in &object_names {
                for verb in &verbs {
                    if name.is_some() && !NAMED_VERBS.contains(verb) {
                        continue;
                    }
                    out.push(Probe {
                        verb,
                        group: group.clone(),
                        resource: resource.clone(),
                        namespace: ns.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
    out
}

/// Asks the API server every probe as `client`; what it answers differently from `rows`.
async fn differences(client: &kube::Client, identity: &str, rows: &[&Row]) -> (usize, Vec<String>) {
    let probes = probes(rows);
    let count = probes.len();
    let answers: Vec<(Probe, bool)> = stream::iter(probes)
        .map(|p| async move {
            let (resource, subresource) = match p.resource.split_once('/') {
                Some((r, s)) => (r.to_owned(), Some(s.to_owned())),
                None => (p.resource.clone(), None),
            };
            let attributes = ResourceAttributes {
                verb: Some(p.verb.to_owned()),
                group: Some(p.group.clone()),
                resource: Some(resource),
                subresource,
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                ..ResourceAttributes::default()
            };
            let allowed = federator_api::plumbing::access_allowed(client, attributes)
                .await
                .unwrap();
            (p, allowed)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let wrong = answers
        .into_iter()
        .filter_map(|(p, allowed)| {
            let expected = rows.iter().any(|r| r.grants(&p));
            (allowed != expected).then(|| {
                format!(
                    "{identity}: {} {}{}{} in {} named {}: the API server says {}, the table {}",
                    p.verb,
                    p.resource,
                    if p.group.is_empty() { "" } else { "." },
                    p.group,
                    p.namespace.as_deref().unwrap_or(CLUSTER),
                    p.name.as_deref().unwrap_or("—"),
                    if allowed { "allowed" } else { "refused" },
                    if expected { "grants it" } else { "does not" },
                )
            })
        })
        .collect();
    (count, wrong)
}

/// A client with nothing but a fresh token of ServiceAccount `sa` of `federator-system`.
async fn token(cluster: &testbed::Cluster, sa: &str) -> kube::Client {
    let token = cluster
        .token_request(names::NAMESPACE, sa, &[], Some(600))
        .await
        .unwrap();
    cluster.client_for_token(&token).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_may_do_exactly_what_the_table_says() {
    let fed = Federation::start(&[("c1", "cluster.local")], &[]).await;
    fed.join("c1");
    let admin = fed.hub.client().await.unwrap();
    apply_rbac(&admin, &render("values.yaml", &[])).await;

    let member = &fed.members["c1"].cluster;
    let hub_secret = Api::<Secret>::namespaced(admin.clone(), names::NAMESPACE)
        .get(&names::member_credential_secret("c1"))
        .await
        .unwrap();
    let hub_kubeconfig =
        String::from_utf8(hub_secret.data.unwrap()[names::KUBECONFIG_KEY].0.clone()).unwrap();
    let identities = [
        (
            HUB_IN_MEMBER,
            testbed::cluster::client_from_yaml(&hub_kubeconfig)
                .await
                .unwrap(),
        ),
        (AGENT, token(member, names::AGENT_SERVICE_ACCOUNT).await),
        (READER, token(member, names::READER_SERVICE_ACCOUNT).await),
        (HUB, token(&fed.hub, "federator").await),
        (INIT, token(&fed.hub, "federator-init").await),
    ];
    let table = documented_rows();
    let mut wrong = Vec::new();
    for (identity, client) in &identities {
        let rows: Vec<&Row> = table.iter().filter(|r| r.identity == *identity).collect();
        assert!(!rows.is_empty(), "the table has rows for {identity}");
        let (asked, found) = differences(client, identity, &rows).await;
        println!("{identity}: {asked} questions, {} rows", rows.len());
        wrong.extend(found);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
