//! The `DaemonSet`'s privileges, proven: `deploy/container-test.sh` builds a FROM-scratch image of
//! the tcpwatch binary and runs it with exactly the capabilities, uid, read-only root, host PID
//! and mounts of `deploy/kubernetes/daemonset.yaml` (podman + runc). The test induces stuck
//! `CLOSE_WAIT` sockets in a namespace it creates and checks that the containerised daemon finds
//! them and their owners; then removes each capability in turn and checks what breaks, so the
//! list in the `DaemonSet` is the smallest one that works.
#![allow(
    clippy::unwrap_used,
    reason = "integration test: a failed step is the test's failure (covers helpers outside #[test] fns)"
)]

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{BIN, Netns, free_port, http_get, privileged, wait_for};

/// The capabilities the container test proved necessary, in the `DaemonSet`'s order.
/// `SYS_ADMIN`: `bpf()` and `setns()` (tcpwatch refuses to start without it);
/// `SYS_PTRACE`: `/proc/PID/fd` of processes whose capabilities exceed ours (root's);
/// `DAC_READ_SEARCH`: `/proc/PID/fd` of processes of other uids (mode 0500).
const PROVEN_CAPS: [&str; 3] = ["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"];

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The `add:` list of the `DaemonSet`'s capabilities, read by hand (no YAML dependency).
fn daemonset_caps(yaml: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "add:").skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        let Some(item) = l.trim().strip_prefix("- ") else {
            break;
        };
        out.push(item.trim().trim_matches('"').to_owned());
    }
    out
}

/// The value of the first `key: value` line whose key is `key`.
fn yaml_value<'a>(yaml: &'a str, key: &str) -> Option<&'a str> {
    yaml.lines().find_map(|l| {
        let (k, v) = l.trim().split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

#[test]
fn daemonset_capabilities_are_the_proven_set() {
    let yaml = std::fs::read_to_string(deploy_dir().join("kubernetes/daemonset.yaml")).unwrap();
    assert_eq!(daemonset_caps(&yaml), PROVEN_CAPS);
    assert_eq!(yaml_value(&yaml, "drop"), Some(r#"["ALL"]"#));
    assert_eq!(yaml_value(&yaml, "runAsUser"), Some("0"));
    assert_eq!(yaml_value(&yaml, "readOnlyRootFilesystem"), Some("true"));
    assert_eq!(yaml_value(&yaml, "allowPrivilegeEscalation"), Some("false"));
    assert_eq!(yaml_value(&yaml, "privileged"), Some("false"));
    assert_eq!(yaml_value(&yaml, "hostPID"), Some("true"));
    // The script runs the container with the list it reads from the same file.
    let out = Command::new("bash")
        .arg(deploy_dir().join("container-test.sh"))
        .arg("caps")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Vec<String> = PROVEN_CAPS.iter().map(|c| format!("CAP_{c}")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want.join(","));
}

fn script(args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(deploy_dir().join("container-test.sh"))
        .args(args)
        .output()
        .unwrap()
}

/// An image built for this test, removed on drop.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.0]).output();
    }
}

/// A running container, removed on drop.
struct Container {
    name: String,
    port: u16,
}

impl Container {
    fn start(image: &Image, caps: &[&str]) -> Self {
        let port = free_port();
        let name = format!("tcpwatch-test-{}-{port}", std::process::id());
        let caps: Vec<String> = caps.iter().map(|c| format!("CAP_{c}")).collect();
        let listen = format!("daemon.listen=\"127.0.0.1:{port}\"");
        let out = script(&[
            "run",
            &image.0,
            &name,
            &caps.join(","),
            "--set",
            &listen,
            "--set",
            "detectors.close_wait.threshold_seconds=2",
            "--set",
            "daemon.owner_scan_interval_ms=500",
        ]);
        assert!(
            out.status.success(),
            "container-test.sh run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name, port }
    }

    fn state(&self) -> (String, i64) {
        let out = Command::new("podman")
            .args([
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &self.name,
            ])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout).into_owned();
        let (status, code) = s.trim().split_once(' ').unwrap_or(("unknown", "0"));
        (status.to_owned(), code.parse().unwrap_or(0))
    }

    fn logs(&self) -> String {
        let out = Command::new("podman")
            .args(["logs", &self.name])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits for /readyz 200; panics with the logs if the container exits or times out.
    fn wait_ready(&self) {
        let ready = wait_for(Duration::from_secs(30), || {
            if http_get(self.port, "/readyz").map(|x| x.0) == Some(200) {
                return Some(true);
            }
            (self.state().0 == "exited").then_some(false)
        });
        assert_eq!(
            ready,
            Some(true),
            "container not ready: {:?}\n{}",
            self.state(),
            self.logs()
        );
    }

    /// The open `close_wait_stuck` finding on `local`, re-read after owner scans had time to
    /// run.
    fn close_wait(&self, local: SocketAddr) -> Value {
        let find = || -> Option<Value> {
            let (status, body) = http_get(self.port, "/api/v1/findings")?;
            (status == 200).then_some(())?;
            let v: Value = serde_json::from_str(&body).ok()?;
            v["open"]
                .as_array()?
                .iter()
                .find(|f| {
                    f["kind"] == "close_wait_stuck" && f["subject"]["local"] == local.to_string()
                })
                .cloned()
        };
        let found = wait_for(Duration::from_secs(20), find);
        let f = found.unwrap_or_else(|| panic!("no close_wait_stuck on {local}\n{}", self.logs()));
        // Let owner scans (every 500 ms) run after the finding opened.
        std::thread::sleep(Duration::from_secs(2));
        find().unwrap_or(f)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

/// A child process that holds a socket (as its stdin) under another uid; killed on drop.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `CLOSE_WAIT` socket in `ns`: (the server side, its local address). The peer is closed.
fn close_wait_socket(ns: &Netns) -> (TcpStream, SocketAddr) {
    ns.enter(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(c);
        (s, addr)
    })
}

fn owner_pid(f: &Value) -> Option<u64> {
    f["subject"]["owner"]["pid"].as_u64()
}

#[test]
fn container_with_daemonset_privileges_detects_and_each_capability_is_needed() {
    if !privileged() {
        return;
    }
    let image = Image(format!("localhost/tcpwatch-test:{}", std::process::id()));
    let out = script(&["build", BIN, &image.0]);
    assert!(
        out.status.success(),
        "building the image failed (podman + runc needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ns = Netns::new("container");
    // A leaked socket of a root process with all capabilities (this test).
    let (_root_sock, root_addr) = close_wait_socket(&ns);
    // A leaked socket of a process of another uid (nobody).
    let (other_sock, other_addr) = close_wait_socket(&ns);
    let holder = Holder(
        Command::new("setpriv")
            .args([
                "--reuid",
                "65534",
                "--regid",
                "65534",
                "--clear-groups",
                "sleep",
                "600",
            ])
            .stdin(Stdio::from(OwnedFd::from(other_sock)))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let me = u64::from(std::process::id());
    let other = u64::from(holder.0.id());

    // The DaemonSet's set: ready, both findings, both owners.
    {
        let c = Container::start(&image, &PROVEN_CAPS);
        c.wait_ready();
        let f = c.close_wait(root_addr);
        assert_eq!(owner_pid(&f), Some(me), "root-owned socket: {f}");
        let f = c.close_wait(other_addr);
        assert_eq!(owner_pid(&f), Some(other), "nobody-owned socket: {f}");
    }

    // Without CAP_SYS_ADMIN: refuses to start, naming it.
    {
        let c = Container::start(&image, &["SYS_PTRACE", "DAC_READ_SEARCH"]);
        let exited = wait_for(Duration::from_secs(30), || {
            let (status, code) = c.state();
            (status == "exited").then_some(code)
        });
        let logs = c.logs();
        let code = exited.unwrap_or_else(|| panic!("still running without CAP_SYS_ADMIN\n{logs}"));
        assert_ne!(code, 0, "{logs}");
        assert!(
            logs.contains("missing capabilities CAP_SYS_ADMIN"),
            "{logs}"
        );
    }

    // Without CAP_SYS_PTRACE: runs and detects, but cannot read root's /proc/PID/fd.
    {
        let c = Container::start(&image, &["SYS_ADMIN", "DAC_READ_SEARCH"]);
        c.wait_ready();
        let f = c.close_wait(root_addr);
        assert_eq!(
            owner_pid(&f),
            None,
            "owner found without CAP_SYS_PTRACE: {f}"
        );
    }

    // Without CAP_DAC_READ_SEARCH: cannot read another uid's /proc/PID/fd (mode 0500).
    {
        let c = Container::start(&image, &["SYS_ADMIN", "SYS_PTRACE"]);
        c.wait_ready();
        let f = c.close_wait(other_addr);
        assert_eq!(
            owner_pid(&f),
            None,
            "owner found without CAP_DAC_READ_SEARCH: {f}"
        );
        let f = c.close_wait(root_addr);
        assert_eq!(owner_pid(&f), Some(me), "{f}");
    }
    drop(holder);
}

/// Top-level `key: value` of one YAML document (a line starting at column 0).
fn top(doc: &str, key: &str) -> Option<String> {
    doc.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')
            .map(|v| v.trim().to_owned())
    })
}

#[test]
fn manifests_have_required_fields_and_validate_against_kubernetes_schemas() {
    let dir = deploy_dir().join("kubernetes");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let resources: Vec<String> = kustomization
        .lines()
        .skip_while(|l| *l != "resources:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- ").map(str::to_owned))
        .collect();
    for want in [
        "namespace.yaml",
        "serviceaccount.yaml",
        "rbac.yaml",
        "configmap.yaml",
        "daemonset.yaml",
        "service.yaml",
        "networkpolicy.yaml",
        "podmonitor.yaml",
        "prometheusrule.yaml",
    ] {
        assert!(
            resources.iter().any(|r| r == want),
            "kustomization.yaml does not list {want}"
        );
    }
    // A tiny structural check that needs no tool: every document has apiVersion, kind and
    // metadata.name, and namespaced ones are in the tcpwatch namespace.
    for r in resources.iter().filter(|r| dir.join(r).exists()) {
        let text = std::fs::read_to_string(dir.join(r)).unwrap();
        for doc in text.split("\n---\n") {
            let kind = top(doc, "kind").unwrap_or_else(|| panic!("{r}: document without kind"));
            assert!(
                top(doc, "apiVersion").is_some(),
                "{r}/{kind}: no apiVersion"
            );
            assert!(
                doc.contains("\nmetadata:\n  name: "),
                "{r}/{kind}: no metadata.name"
            );
            let cluster_scoped = ["Namespace", "ClusterRole", "ClusterRoleBinding"];
            if !cluster_scoped.contains(&kind.as_str()) {
                assert!(
                    doc.contains("\n  namespace: tcpwatch\n"),
                    "{r}/{kind}: not in namespace tcpwatch"
                );
            }
        }
    }
    let config = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    // The API (per-connection detail) on localhost only; the metrics port on the pod IP with
    // a web configuration; only Prometheus admitted to it (docs/security.md).
    assert!(
        config.contains("\n    listen = \"127.0.0.1:9977\""),
        "{config}"
    );
    assert!(
        config.contains("metrics_listen = \"0.0.0.0:9978\""),
        "{config}"
    );
    assert!(
        config.contains("metrics_web_config_file = \"/etc/tcpwatch/metrics-web.toml\""),
        "{config}"
    );
    assert!(config.contains("[tls_server_config]"), "{config}");
    let policy = std::fs::read_to_string(dir.join("networkpolicy.yaml")).unwrap();
    assert!(
        policy.contains("kind: NetworkPolicy") && policy.contains("port: 9978"),
        "{policy}"
    );
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml")).unwrap();
    assert!(
        !ds.contains("containerPort: 9977"),
        "the API port must not be a pod port"
    );
    let pm = std::fs::read_to_string(dir.join("podmonitor.yaml")).unwrap();
    assert!(
        pm.contains("scheme: https") && pm.contains("authorization:"),
        "{pm}"
    );
    assert!(config.contains("log_format = \"json\""), "{config}");
    // Kubernetes authorization of the API (docs/security.md#kubernetes-authorization): the
    // service account may create TokenReviews and SubjectAccessReviews, a reader role exists
    // (non-resource URLs only), and the example web configuration turns the check on.
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml")).unwrap();
    assert!(
        rbac.contains("name: system:auth-delegator")
            && rbac.contains("name: tcpwatch-auth-delegator"),
        "{rbac}"
    );
    assert!(
        rbac.contains("name: tcpwatch-api-reader")
            && rbac.contains("nonResourceURLs: [\"/api/v1/*\"]"),
        "{rbac}"
    );
    assert!(
        config.contains("api-web.toml: |\n    [kubernetes_authorization]\n"),
        "{config}"
    );

    // The full schema check (kubernetes-validate, offline schemas from PyPI).
    let out = Command::new("bash")
        .arg(deploy_dir().join("validate-manifests.sh"))
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(3) && std::env::var_os("CI").is_none() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: kubernetes-validate could not be installed: {log} !!!!!!!!\n"
        );
        return;
    }
    assert!(out.status.success(), "manifest validation failed:\n{log}");
}
