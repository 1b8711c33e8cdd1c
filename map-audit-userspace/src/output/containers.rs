//! Which container and pod a cgroup v2 path belongs to, read from the path alone (the
//! runtimes name their cgroups after the container id): Docker, containerd (CRI),
//! CRI-O, Podman and systemd-nspawn, with the systemd and cgroupfs drivers, and the
//! pod uid of Kubernetes' `kubepods` hierarchies (k3s and kind use the same). Names,
//! images and pod names come from the runtime's API (`container_api`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

/// The container a process runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Container {
    /// The runtime's id: 64 hex digits, or the machine name for systemd-nspawn.
    #[schemars(length(min = 1, max = 256))]
    pub id: Arc<str>,
    /// `docker`, `containerd`, `cri-o`, `podman` or `systemd-nspawn`; null when the
    /// path does not say (a `kubepods` tree under the cgroupfs driver).
    pub runtime: Option<Runtime>,
    /// The container's name, from the runtime's API (Docker, Podman; containerd:
    /// kubelet's container name); null until it answers, or when it cannot be asked
    /// (CRI-O, no socket).
    pub name: Option<Arc<str>>,
    /// The container's image, as it was asked for (`localhost/web:2`), from the same
    /// answer.
    pub image: Option<Arc<str>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    SystemdNspawn,
}

/// The Kubernetes pod a process runs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Kubernetes {
    /// The pod's uid (from its `kubepods` cgroup).
    #[schemars(length(equal = 36))]
    pub pod_uid: Arc<str>,
    /// The pod's name, from the `io.kubernetes.pod.name` label of the runtime's answer
    /// (containerd, Docker with cri-dockerd, Podman); null otherwise.
    pub pod_name: Option<Arc<str>>,
    /// The pod's namespace (`io.kubernetes.pod.namespace`), likewise.
    pub pod_namespace: Option<Arc<str>>,
    /// The container's name in the pod spec (`io.kubernetes.container.name`), likewise.
    pub container_name: Option<Arc<str>>,
}

/// The container and pod of cgroup `path` (as `/proc/PID/cgroup` gives it), each
/// `None` when the path is not one of theirs.
pub fn parse(path: &str) -> (Option<Container>, Option<Kubernetes>) {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let in_kubepods = components.iter().any(|c| c.starts_with("kubepods"));
    let pod = components.iter().rev().find_map(|c| pod_uid(c));
    // The innermost component that names a container: a runtime's scope may hold
    // sub-cgroups of its own (Docker-in-Docker, systemd inside the container).
    let container =
        components.iter().enumerate().rev().find_map(|(i, c)| {
            container_of(c, i.checked_sub(1).map(|p| components[p]), in_kubepods)
        });
    let kubernetes = pod.map(|uid| Kubernetes {
        pod_uid: uid.into(),
        pod_name: None,
        pod_namespace: None,
        container_name: None,
    });
    (container, kubernetes)
}

fn container_of(component: &str, parent: Option<&str>, in_kubepods: bool) -> Option<Container> {
    let scoped = [
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("libpod-", Runtime::Podman),
    ];
    if let Some(unit) = component.strip_suffix(".scope") {
        for (prefix, runtime) in scoped {
            if let Some(id) = unit.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                return Some(container(id, Some(runtime)));
            }
        }
        if let Some(machine) = unit.strip_prefix("machine-")
            && !machine.is_empty()
        {
            return Some(container(
                &unescape_unit(machine),
                Some(Runtime::SystemdNspawn),
            ));
        }
        return None;
    }
    // cgroupfs driver: the bare id in a directory named after the runtime or the pod
    // (Podman's: `libpod_parent/libpod-ID`).
    if let Some(id) = component
        .strip_prefix("libpod-")
        .filter(|id| is_container_id(id))
    {
        return Some(container(id, Some(Runtime::Podman)));
    }
    if !is_container_id(component) {
        return None;
    }
    let runtime = match parent {
        Some("docker") => Some(Runtime::Docker),
        _ if in_kubepods => None,
        _ => return None,
    };
    Some(container(component, runtime))
}

fn container(id: &str, runtime: Option<Runtime>) -> Container {
    Container {
        id: id.into(),
        runtime,
        name: None,
        image: None,
    }
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod as `--pod` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRef {
    Uid(String),
    Name { namespace: String, name: String },
}

impl PodRef {
    /// `NAMESPACE/NAME` or the pod's UID (8-4-4-4-12 hex digits).
    pub fn parse(value: &str) -> Result<Self, String> {
        if is_pod_uid(value) {
            return Ok(Self::Uid(value.to_ascii_lowercase()));
        }
        match value.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self::Name {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            _ => Err(format!(
                "{value:?} is neither NAMESPACE/NAME nor a pod UID (8-4-4-4-12 hex digits)"
            )),
        }
    }
}

fn is_pod_uid(uid: &str) -> bool {
    let groups: Vec<usize> = uid.split('-').map(str::len).collect();
    uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') && groups == [8, 4, 4, 4, 12]
}

/// The pod uid of cgroup `path` when its last component is the pod's own cgroup (the
/// directory that holds its containers).
pub fn pod_of_directory(path: &str) -> Option<String> {
    pod_uid(path.rsplit('/').next()?)
}

/// `pod<uid>` (cgroupfs: dashes) or `kubepods-<qos>-pod<uid>.slice` (systemd:
/// underscores for the dashes).
fn pod_uid(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let uid = &name[name.rfind("pod")? + 3..];
    let uid = uid.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// systemd unit-name escapes (`\x2d` for `-`) undone.
fn unescape_unit(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("\\x") {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 2..at + 4);
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push_str("\\x");
                rest = &rest[at + 2..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f5c0a2b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b";
    const POD: &str = "0f2e5b4c-1a2b-4c3d-8e9f-0123456789ab";

    fn shape(path: &str) -> (Option<(String, Option<Runtime>)>, Option<String>) {
        let (container, pod) = parse(path);
        (
            container.map(|c| (c.id.to_string(), c.runtime)),
            pod.map(|p| p.pod_uid.to_string()),
        )
    }

    #[test]
    fn real_path_shapes() {
        let pod_ = POD.replace('-', "_");
        type Row<'a> = (String, Option<(&'a str, Option<Runtime>)>, Option<&'a str>);
        let table: Vec<Row> = vec![
            // Docker, systemd and cgroupfs drivers.
            (
                format!("/system.slice/docker-{ID}.scope"),
                Some((ID, Some(Runtime::Docker))),
                None,
            ),
            (
                format!("/docker/{ID}"),
                Some((ID, Some(Runtime::Docker))),
                None,
            ),
            // Podman (rootful and rootless), and its conmon (not the container).
            (
                format!("/machine.slice/libpod-{ID}.scope"),
                Some((ID, Some(Runtime::Podman))),
                None,
            ),
            (
                format!(
                    "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
                ),
                Some((ID, Some(Runtime::Podman))),
                None,
            ),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                None,
                None,
            ),
            (
                format!("/libpod_parent/libpod-{ID}"),
                Some((ID, Some(Runtime::Podman))),
                None,
            ),
            // Kubernetes with the systemd driver: containerd and CRI-O.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice/cri-containerd-{ID}.scope"
                ),
                Some((ID, Some(Runtime::Containerd))),
                Some(POD),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-{ID}.scope"),
                Some((ID, Some(Runtime::CriO))),
                Some(POD),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{pod_}.slice/crio-conmon-{ID}.scope"),
                None,
                Some(POD),
            ),
            // Kubernetes with the cgroupfs driver (k3s, kind): the runtime is not in the path.
            (
                format!("/kubepods/besteffort/pod{POD}/{ID}"),
                Some((ID, None)),
                Some(POD),
            ),
            (
                format!("/kubepods/pod{POD}/{ID}"),
                Some((ID, None)),
                Some(POD),
            ),
            // A pod's own cgroup (no container yet), nspawn, and host processes.
            (format!("/kubepods/burstable/pod{POD}"), None, Some(POD)),
            (
                "/machine.slice/machine-web\\x2d1.scope".into(),
                Some(("web-1", Some(Runtime::SystemdNspawn))),
                None,
            ),
            ("/system.slice/ssh.service".into(), None, None),
            (
                "/user.slice/user-0.slice/session-3.scope".into(),
                None,
                None,
            ),
            ("/".into(), None, None),
            (format!("/system.slice/{ID}"), None, None),
            ("/kubepods/podnot-a-uid".into(), None, None),
        ];
        for (path, container, pod) in table {
            let expected = (
                container.map(|(id, runtime)| (id.to_string(), runtime)),
                pod.map(str::to_string),
            );
            assert_eq!(shape(&path), expected, "{path}");
        }
    }

    #[test]
    fn pods_are_named_by_namespace_and_name_or_by_uid() {
        assert_eq!(PodRef::parse(POD), Ok(PodRef::Uid(POD.into())));
        assert_eq!(
            PodRef::parse("shop/web-7f9"),
            Ok(PodRef::Name {
                namespace: "shop".into(),
                name: "web-7f9".into()
            })
        );
        for bad in ["web", "/web", "shop/", "a/b/c", "0f2e5b4c-1a2b"] {
            assert!(PodRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pods_own_directory_is_told_from_its_containers() {
        let pod_ = POD.replace('-', "_");
        for path in [
            format!("/kubepods/besteffort/pod{POD}"),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{pod_}.slice"),
        ] {
            assert_eq!(pod_of_directory(&path).as_deref(), Some(POD), "{path}");
        }
        for path in [
            format!("/kubepods/besteffort/pod{POD}/libpod-{ID}"),
            "/kubepods.slice/kubepods-besteffort.slice".to_string(),
            "/kubepods".to_string(),
        ] {
            assert_eq!(pod_of_directory(&path), None, "{path}");
        }
    }
}
