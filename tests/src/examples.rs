//! Running the examples' tools (`tools/build.sh ops`) and reading the Helm chart's renderings,
//! for `tests/tests/examples.rs` and the tests that install the chart's objects.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use federator_api::names;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_yaml::Value;
use testbed::Binaries;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The hub's Helm chart.
pub fn chart() -> PathBuf {
    repo().join("examples/helm/federator")
}

/// A tool from `tools/build.sh ops`; its absence fails the test with the command to run.
pub fn tool(find: fn(&Binaries) -> testbed::Result<PathBuf>) -> Command {
    let path = find(&Binaries::locate()).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(path);
    // helm keeps caches and plugins under $HOME; keep them out of the user's.
    let home = std::env::temp_dir().join("federator-examples-helm-home");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo());
    cmd
}

/// Runs a command; its output.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; its stderr.
pub fn fails(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded but must fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// `helm template federator <chart> -n federator-system ARGS`, for the testbed's Kubernetes
/// version.
pub fn helm_template(args: &[&str]) -> Command {
    let mut cmd = tool(Binaries::helm);
    cmd.arg("template")
        .arg("federator")
        .arg(chart())
        .args(["--namespace", names::NAMESPACE])
        .args(["--kube-version", testbed::binaries::KUBERNETES_VERSION])
        .args(args);
    cmd
}

/// The chart rendered with `values` (a file of the chart) and extra `helm template` flags.
pub fn render_text(values: &str, args: &[&str]) -> String {
    ok(helm_template(&["-f", chart().join(values).to_str().unwrap()]).args(args))
}

/// The objects of a multi-document YAML stream.
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The chart's objects rendered with `values` and extra `helm template` flags.
pub fn render(values: &str, args: &[&str]) -> Vec<Value> {
    documents(&render_text(values, args))
}

/// The object of `kind` named `name`; panics when absent.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
}

/// A YAML list as strings (numbers as YAML writes them).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
        })
        .collect()
}

/// The value following `flag` in an argument list.
pub fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Creates one object of a rendering.
pub async fn create<K>(api: &Api<K>, doc: &Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_yaml::from_value(doc.clone()).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("cannot create {doc:?}: {e}"));
}

/// Creates the ServiceAccounts, Roles, ClusterRoles and their bindings of a rendering (in
/// `federator-system`, which must exist), as `helm install` would.
pub async fn apply_rbac(admin: &kube::Client, docs: &[Value]) {
    let ns = names::NAMESPACE;
    for d in docs {
        match d["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                create(&Api::<ServiceAccount>::namespaced(admin.clone(), ns), d).await
            }
            "Role" => create(&Api::<Role>::namespaced(admin.clone(), ns), d).await,
            "RoleBinding" => create(&Api::<RoleBinding>::namespaced(admin.clone(), ns), d).await,
            "ClusterRole" => create(&Api::<ClusterRole>::all(admin.clone()), d).await,
            "ClusterRoleBinding" => create(&Api::<ClusterRoleBinding>::all(admin.clone()), d).await,
            _ => {}
        }
    }
}
