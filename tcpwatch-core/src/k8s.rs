//! Container and pod identity from a process's cgroup (`/proc/PID/cgroup`): the container id
//! and, for Kubernetes pods, the pod UID the kubelet put in the cgroup path.
//!
//! Formats understood (cgroup v2 has one `0::PATH` line; cgroup v1 has one line per
//! hierarchy, and the first line that names a container wins):
//!
//! - kubelet, systemd cgroup driver: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope` (also `crio-<id>.scope`,
//!   `docker-<id>.scope`), and containerd's `.../kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`;
//! - kubelet, cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, `/kubepods/pod<uid>/<id>`;
//! - plain Docker and Podman: `/docker/<id>`, `/system.slice/docker-<id>.scope`,
//!   `/machine.slice/libpod-<id>.scope`;
//! - paths relative to a cgroup namespace (`/../../kubepods.slice/...`).
//!
//! `<id>` is 64 hex digits. CRI-O's `crio-conmon-<id>.scope` (the container monitor, not the
//! container) is not a container. Processes outside containers give `None`.

/// The container runtime, as told by the cgroup path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A bare id (the kubelet's cgroupfs driver does not say which runtime).
    Unknown,
}

impl Runtime {
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Containerd => "containerd",
            Self::CriO => "cri-o",
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Unknown => "unknown",
        }
    }
}

/// What a cgroup path says about a containerized process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupIds {
    /// 64 lowercase hex digits.
    pub container_id: String,
    /// The pod's UID with dashes (`0f1e2d3c-...`), for containers of Kubernetes pods.
    pub pod_uid: Option<String>,
    pub runtime: Runtime,
}

/// Parses the text of `/proc/PID/cgroup`.
#[must_use]
pub fn parse_cgroup(text: &str) -> Option<CgroupIds> {
    text.lines().find_map(|line| {
        // `hierarchy-ID:controller-list:cgroup-path`; the path may itself contain ':'.
        let path = line.splitn(3, ':').nth(2)?;
        parse_path(path)
    })
}

fn parse_path(path: &str) -> Option<CgroupIds> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (at, id, mut runtime) = comps
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, c)| container_of(c).map(|(id, rt)| (i, id, rt)))?;
    if runtime == Runtime::Unknown && comps[..at].contains(&"docker") {
        runtime = Runtime::Docker;
    }
    let pod_uid = comps[..=at].iter().rev().find_map(|c| pod_uid_of(c));
    Some(CgroupIds {
        container_id: id.to_ascii_lowercase(),
        pod_uid,
        runtime,
    })
}

/// `cri-containerd-<id>.scope`, `<slice>:cri-containerd:<id>`, `crio-<id>.scope`, `<id>`...
fn container_of(comp: &str) -> Option<(&str, Runtime)> {
    let comp = comp.strip_suffix(".scope").unwrap_or(comp);
    let (prefix, id) = comp.rsplit_once(['-', ':']).unwrap_or(("", comp));
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // `kubepods-...-pod<uid>.slice:cri-containerd` -> `cri-containerd`.
    let prefix = prefix.rsplit(':').next().unwrap_or(prefix);
    let runtime = match prefix {
        "cri-containerd" | "containerd" => Runtime::Containerd,
        "crio" => Runtime::CriO,
        "docker" => Runtime::Docker,
        "libpod" => Runtime::Podman,
        "crio-conmon" | "libpod-conmon" => return None,
        _ => Runtime::Unknown,
    };
    Some((id, runtime))
}

/// `pod<uid>` (cgroupfs driver) or `kubepods-<qos>-pod<uid with _>.slice` (systemd driver).
fn pod_uid_of(comp: &str) -> Option<String> {
    let comp = comp.split(':').next().unwrap_or(comp);
    let comp = comp.strip_suffix(".slice").unwrap_or(comp);
    let raw = match comp.strip_prefix("pod") {
        Some(r) => r,
        None => comp.rsplit_once("-pod")?.1,
    };
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    valid_uid(&uid).then_some(uid)
}

/// A UUID (`8-4-4-4-12` hex digits) or, for static pods, the 32-hex-digit config hash the
/// kubelet uses as their UID.
fn valid_uid(uid: &str) -> bool {
    let hex = uid.bytes().filter(u8::is_ascii_hexdigit).count();
    let dashes = uid.bytes().filter(|&b| b == b'-').count();
    hex == 32
        && hex + dashes == uid.len()
        && (dashes == 0 || uid.split('-').map(str::len).eq([8, 4, 4, 4, 12]))
}

/// The first 12 hex digits of a container id, as `docker ps` and `crictl ps` show it.
#[must_use]
pub fn short_id(container_id: &str) -> &str {
    container_id.get(..12).unwrap_or(container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UID_: &str = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";

    fn ids(text: &str) -> (String, Option<String>, Runtime) {
        let c = parse_cgroup(text).unwrap_or_else(|| panic!("no container in {text:?}"));
        (c.container_id, c.pod_uid, c.runtime)
    }

    fn pod(rt: Runtime) -> (String, Option<String>, Runtime) {
        (ID.to_owned(), Some(UID.to_owned()), rt)
    }

    #[test]
    fn cgroup_v2_systemd_driver() {
        for (qos, qos_) in [
            ("kubepods-burstable.slice/", "burstable-"),
            ("kubepods-besteffort.slice/", "besteffort-"),
            ("", ""),
        ] {
            let base = format!("0::/kubepods.slice/{qos}kubepods-{qos_}pod{UID_}.slice");
            assert_eq!(
                ids(&format!("{base}/cri-containerd-{ID}.scope\n")),
                pod(Runtime::Containerd)
            );
            assert_eq!(
                ids(&format!("{base}/crio-{ID}.scope\n")),
                pod(Runtime::CriO)
            );
            assert_eq!(
                ids(&format!("{base}/docker-{ID}.scope\n")),
                pod(Runtime::Docker)
            );
        }
    }

    #[test]
    fn cgroup_v2_relative_to_a_cgroup_namespace() {
        let text =
            format!("0::/../../kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n");
        assert_eq!(ids(&text), pod(Runtime::Containerd));
    }

    #[test]
    fn containerd_systemd_slice_colon_format() {
        let text = format!(
            "1:name=systemd:/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}\n"
        );
        assert_eq!(ids(&text), pod(Runtime::Containerd));
    }

    #[test]
    fn cgroupfs_driver() {
        for qos in ["burstable/", "besteffort/", ""] {
            let text = format!("0::/kubepods/{qos}pod{UID}/{ID}\n");
            assert_eq!(ids(&text), pod(Runtime::Unknown), "{text}");
        }
    }

    #[test]
    fn cgroup_v1_multi_line_picks_the_first_line_with_an_id() {
        let text = format!(
            "13:misc:/\n\
             12:rdma:/\n\
             11:memory:/kubepods/burstable/pod{UID}/{ID}\n\
             10:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
             0::/\n"
        );
        assert_eq!(ids(&text), pod(Runtime::Unknown));
        let other = ID.replace('0', "f");
        let text = format!("5:pids:/docker/{ID}\n4:memory:/docker/{other}\n");
        assert_eq!(ids(&text).0, ID);
        let v1_systemd = format!(
            "12:blkio:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope\n\
             11:devices:/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{ID}.scope\n"
        );
        assert_eq!(ids(&v1_systemd), pod(Runtime::CriO));
    }

    #[test]
    fn plain_docker_and_podman() {
        for text in [
            format!("0::/docker/{ID}\n"),
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("12:pids:/docker/{ID}\n11:cpu:/docker/{ID}\n"),
        ] {
            assert_eq!(ids(&text), (ID.to_owned(), None, Runtime::Docker), "{text}");
        }
        assert_eq!(
            ids(&format!("0::/machine.slice/libpod-{ID}.scope/container\n")),
            (ID.to_owned(), None, Runtime::Podman)
        );
    }

    #[test]
    fn static_pods_use_a_hash_as_uid() {
        let hash = "5e1f2c3b4a5968778695a4b3c2d1e0f9";
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{hash}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(ids(&text).1.as_deref(), Some(hash));
    }

    #[test]
    fn uppercase_ids_are_lowercased() {
        let text = format!("0::/docker/{}\n", ID.to_ascii_uppercase());
        assert_eq!(ids(&text).0, ID);
    }

    #[test]
    fn not_containers() {
        for text in [
            "0::/\n",
            "0::/init.scope\n",
            "0::/user.slice/user-0.slice/session-1.scope\n",
            "0::/system.slice/containerd.service\n",
            "0::/system.slice/kubelet.service\n",
            "12:pids:/\n11:memory:/user.slice\n1:name=systemd:/init.scope\n",
            "",
            "garbage",
        ] {
            assert_eq!(parse_cgroup(text), None, "{text}");
        }
        // CRI-O's container monitor lives in the pod's slice but is no container.
        let conmon =
            format!("0::/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(parse_cgroup(&conmon), None);
        // Too short, not hex.
        assert_eq!(parse_cgroup(&format!("0::/docker/{}\n", &ID[1..])), None);
        assert_eq!(
            parse_cgroup(&format!("0::/docker/{}\n", ID.replace('a', "g"))),
            None
        );
    }

    #[test]
    fn malformed_pod_uids_are_ignored() {
        for bad in ["pod1234_5678", "podnot-a-uid", "pod"] {
            let text = format!("0::/kubepods/{bad}/{ID}\n");
            assert_eq!(ids(&text).1, None, "{text}");
        }
        // A pod slice after the container (impossible) is not the container's pod.
        let text = format!("0::/docker/{ID}/kubepods-pod{UID_}.slice\n");
        assert_eq!(ids(&text).1, None);
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id(ID), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}
