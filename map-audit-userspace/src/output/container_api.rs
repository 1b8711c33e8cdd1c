//! Names, images and pod labels of containers, from their runtime: the Docker Engine
//! API that Docker and Podman serve on a unix socket (`GET /containers/ID/json`: `Name`,
//! `Config.Image`, and the `io.kubernetes.*` labels cri-dockerd sets). Asked once per
//! container, on a thread of its own with a 2 s timeout, so the pipeline never waits:
//! events written before the answer keep null names, and a runtime that does not
//! answer costs a counted miss. containerd is asked in its own gRPC API
//! (`containerd_api`); CRI-O (the CRI only) is not, its names stay null.
//! `--pod NAMESPACE/NAME` is resolved to the pod's UID here too, by kubelet's labels.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{Receiver, channel},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::output::{
    containerd_api,
    containers::{Container, Kubernetes, Runtime},
};

/// Per request: connecting, asking and reading the answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The sockets asked by default, where Docker and a rootful Podman serve their API.
pub fn default_sockets() -> Vec<(Runtime, PathBuf)> {
    vec![
        (Runtime::Docker, "/var/run/docker.sock".into()),
        (Runtime::Podman, "/run/podman/podman.sock".into()),
        (
            Runtime::Containerd,
            "/run/containerd/containerd.sock".into(),
        ),
    ]
}

/// `question`, or an error once `LOOKUP_TIMEOUT` has passed without its answer.
async fn bounded<T>(question: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(LOOKUP_TIMEOUT, question)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 2 s")))
}

/// Asks `runtime` at `socket` about container `id`, in its own protocol.
async fn ask(runtime: Runtime, socket: &Path, id: &str) -> Result<Details> {
    let mut details = match runtime {
        Runtime::Containerd => containerd_api::inspect(socket, id).await?,
        _ => inspect(socket, id).await?,
    };
    details.runtime = Some(runtime);
    Ok(details)
}

/// What a runtime says of a container.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Details {
    /// The runtime that answered (the path does not say for a `kubepods` container
    /// under the cgroupfs driver).
    pub runtime: Option<Runtime>,
    pub name: Option<Arc<str>>,
    pub image: Option<Arc<str>>,
    pub pod_name: Option<Arc<str>>,
    pub pod_namespace: Option<Arc<str>>,
    pub pod_uid: Option<Arc<str>>,
    pub container_name: Option<Arc<str>>,
}

enum Lookup {
    Pending,
    Known(Arc<Details>),
    /// No socket for its runtime, or the runtime did not answer.
    Unknown,
}

/// Counts of the lookups (in `agent_stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LookupCounts {
    pub answered: u64,
    pub missed: u64,
}

pub struct ContainerApis {
    sockets: HashMap<Runtime, PathBuf>,
    requests: tokio::sync::mpsc::UnboundedSender<(Arc<str>, Runtime, PathBuf)>,
    answers: Receiver<(Arc<str>, Result<Details, String>)>,
    known: HashMap<Arc<str>, Lookup>,
    pub counts: LookupCounts,
}

impl ContainerApis {
    /// Starts the lookup thread for the runtimes of `sockets`.
    pub fn start(sockets: Vec<(Runtime, PathBuf)>) -> Result<Self> {
        let (requests, mut asked) =
            tokio::sync::mpsc::unbounded_channel::<(Arc<str>, Runtime, PathBuf)>();
        let (answer, answers) = channel();
        std::thread::Builder::new()
            .name("container-api".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime builds");
                // One task per lookup: a runtime that hangs delays no other container.
                runtime.block_on(async move {
                    while let Some((id, runtime, socket)) = asked.recv().await {
                        let answer = answer.clone();
                        tokio::spawn(async move {
                            let details = bounded(ask(runtime, &socket, &id))
                                .await
                                .map_err(|err| format!("{}: {err:#}", socket.display()));
                            let _ = answer.send((id, details));
                        });
                    }
                });
            })
            .context("starting the container-api thread failed")?;
        Ok(Self {
            sockets: sockets.into_iter().collect(),
            requests,
            answers,
            known: HashMap::new(),
            counts: LookupCounts::default(),
        })
    }

    /// Fills `container`'s name and image, and its pod's names, when its runtime has
    /// answered; asks it the first time the container is seen.
    pub fn fill(&mut self, container: &mut Container, kubernetes: &mut Option<Kubernetes>) {
        self.take_answers();
        let lookup = match self.known.get(&container.id) {
            Some(lookup) => lookup,
            None => {
                // A pod's container under the cgroupfs driver does not name its runtime:
                // containerd is asked (CRI-O is not).
                let runtime = container.runtime.unwrap_or(Runtime::Containerd);
                let lookup = match self.sockets.get(&runtime) {
                    Some(socket) => {
                        let _ = self
                            .requests
                            .send((container.id.clone(), runtime, socket.clone()));
                        Lookup::Pending
                    }
                    None => Lookup::Unknown,
                };
                self.known.entry(container.id.clone()).or_insert(lookup)
            }
        };
        let Lookup::Known(details) = lookup else {
            return;
        };
        container.runtime = container.runtime.or(details.runtime);
        container.name = details.name.clone();
        container.image = details.image.clone();
        let pod = kubernetes.get_or_insert_with(|| Kubernetes {
            pod_uid: details.pod_uid.clone().unwrap_or_default(),
            pod_name: None,
            pod_namespace: None,
            container_name: None,
        });
        pod.pod_name = details.pod_name.clone();
        pod.pod_namespace = details.pod_namespace.clone();
        pod.container_name = details.container_name.clone();
        if pod.pod_uid.is_empty() {
            *kubernetes = None;
        }
    }

    /// The container's lookup is on its way.
    pub fn pending(&self, id: &str) -> bool {
        matches!(self.known.get(id), Some(Lookup::Pending))
    }

    /// Takes the answers that arrived; true when any did.
    pub fn take_answers(&mut self) -> bool {
        let mut any = false;
        for (id, details) in self.answers.try_iter() {
            any = true;
            let lookup = match details {
                Ok(details) => {
                    self.counts.answered += 1;
                    Lookup::Known(Arc::new(details))
                }
                Err(why) => {
                    log::debug!("container {id}: {why}");
                    self.counts.missed += 1;
                    Lookup::Unknown
                }
            };
            self.known.insert(id, lookup);
        }
        any
    }
}

#[derive(Deserialize)]
struct Inspected {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Config")]
    config: Option<Config>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "Image")]
    image: Option<String>,
    #[serde(rename = "Labels")]
    labels: Option<HashMap<String, String>>,
}

/// `GET /containers/ID/json` on the runtime's socket.
async fn inspect(socket: &Path, id: &str) -> Result<Details> {
    let body = get(socket, &format!("/containers/{id}/json")).await?;
    Ok(details_of(serde_json::from_slice(&body)?))
}

/// The body of `GET path` on the runtime's socket, when it succeeds.
async fn get(socket: &Path, path: &str) -> Result<bytes::Bytes> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("HTTP {status} for {path}");
    }
    Ok(body)
}

/// The UIDs of pod `namespace/name`, from the labels kubelet sets on its containers,
/// asked of every runtime of `sockets` (stopped containers included). Blocking: for
/// `--pod` at the start, at most 2 s per runtime.
pub fn pod_uids(
    sockets: &[(Runtime, PathBuf)],
    namespace: &str,
    name: &str,
) -> Result<Vec<String>> {
    let labels = [
        ("io.kubernetes.pod.namespace", namespace),
        ("io.kubernetes.pod.name", name),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the pod lookup failed")?;
    let mut uids = std::collections::BTreeSet::new();
    let mut asked = Vec::new();
    for (kind, socket) in sockets {
        let listed = runtime.block_on(bounded(async {
            match kind {
                Runtime::Containerd => containerd_api::list_labelled(socket, &labels).await,
                _ => list_labelled(socket, &labels).await,
            }
        }));
        match listed {
            Ok(containers) => {
                asked.push(format!(
                    "{}: {} containers",
                    socket.display(),
                    containers.len()
                ));
                uids.extend(
                    containers
                        .into_iter()
                        .filter_map(|mut labels| labels.remove("io.kubernetes.pod.uid")),
                );
            }
            Err(err) => asked.push(format!("{}: {err:#}", socket.display())),
        }
    }
    if uids.is_empty() {
        bail!(
            "no container of pod {namespace}/{name} was found ({}); give the pod's UID instead: kubectl get pod {name} -n {namespace} -o jsonpath='{{.metadata.uid}}'",
            asked.join("; ")
        );
    }
    Ok(uids.into_iter().collect())
}

/// The labels of every container that has all of `labels` (`GET /containers/json`
/// filtered by label, stopped containers included).
async fn list_labelled(
    socket: &Path,
    labels: &[(&str, &str)],
) -> Result<Vec<HashMap<String, String>>> {
    let filters = serde_json::json!({
        "label": labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()
    })
    .to_string();
    let path = format!(
        "/containers/json?all=true&filters={}",
        percent_encoding::utf8_percent_encode(&filters, percent_encoding::NON_ALPHANUMERIC)
    );
    let listed: Vec<Listed> = serde_json::from_slice(&get(socket, &path).await?)?;
    Ok(listed
        .into_iter()
        .map(|c| c.labels.unwrap_or_default())
        .collect())
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Labels")]
    labels: Option<HashMap<String, String>>,
}

fn details_of(inspected: Inspected) -> Details {
    let config = inspected.config.unwrap_or(Config {
        image: None,
        labels: None,
    });
    let name = inspected
        .name
        .map(|n| n.trim_start_matches('/').to_string());
    details_from(name, config.image, &config.labels.unwrap_or_default())
}

/// A container's details from its name, image and labels (kubelet's, when a pod's).
pub fn details_from(
    name: Option<String>,
    image: Option<String>,
    labels: &HashMap<String, String>,
) -> Details {
    let label = |key: &str| labels.get(key).map(|v| Arc::from(v.as_str()));
    Details {
        runtime: None,
        name: name.map(Arc::from),
        image: image.filter(|i| !i.is_empty()).map(Arc::from),
        pod_name: label("io.kubernetes.pod.name"),
        pod_namespace: label("io.kubernetes.pod.namespace"),
        pod_uid: label("io.kubernetes.pod.uid"),
        container_name: label("io.kubernetes.container.name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_image_and_pod_labels_are_read_from_an_inspect_answer() {
        let answer = r#"{"Id":"abc","Name":"/web-1","Config":{"Image":"localhost/web:2",
            "Labels":{"io.kubernetes.pod.name":"web-7f9","io.kubernetes.pod.namespace":"shop",
            "io.kubernetes.pod.uid":"0f2e5b4c-1a2b-4c3d-8e9f-0123456789ab",
            "io.kubernetes.container.name":"web"}}}"#;
        let details = details_of(serde_json::from_str(answer).unwrap());
        assert_eq!(details.name.as_deref(), Some("web-1"));
        assert_eq!(details.image.as_deref(), Some("localhost/web:2"));
        assert_eq!(details.pod_name.as_deref(), Some("web-7f9"));
        assert_eq!(details.pod_namespace.as_deref(), Some("shop"));
        assert_eq!(details.container_name.as_deref(), Some("web"));
        let bare =
            details_of(serde_json::from_str(r#"{"Name":"/x","Config":{"Labels":null}}"#).unwrap());
        assert_eq!(bare.pod_name, None);
        assert_eq!(bare.image, None);
    }
}
