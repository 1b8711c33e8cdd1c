//! Names, images and pod labels of containerd's containers, from containerd's own gRPC
//! API (`containerd.services.containers.v1.Containers`, through the containerd
//! project's client crate) in namespace `k8s.io`, where its CRI plugin keeps kubelet's
//! containers with kubelet's `io.kubernetes.*` labels. One connection per question;
//! `container_api` calls these with its timeout. CRI-O is not asked.

use std::{collections::HashMap, path::Path};

use anyhow::{Context, Result};
use containerd_client::{
    services::v1::{
        GetContainerRequest, ListContainersRequest, containers_client::ContainersClient,
    },
    tonic::Request,
    with_namespace,
};

use super::container_api::{Details, details_from};

/// The containerd namespace of Kubernetes' containers.
const NAMESPACE: &str = "k8s.io";

async fn client(
    socket: &Path,
) -> Result<ContainersClient<containerd_client::tonic::transport::Channel>> {
    let channel = containerd_client::connect(socket)
        .await
        .context("connecting failed")?;
    Ok(ContainersClient::new(channel))
}

/// `Containers/Get` of container `id`.
pub async fn inspect(socket: &Path, id: &str) -> Result<Details> {
    let request = with_namespace!(GetContainerRequest { id: id.into() }, NAMESPACE);
    let container = client(socket)
        .await?
        .get(request)
        .await?
        .into_inner()
        .container
        .context("containerd answered without the container")?;
    let labels = container.labels;
    // A CRI container has no name of its own: kubelet's container name stands for it.
    let name = labels.get("io.kubernetes.container.name").cloned();
    Ok(details_from(name, Some(container.image), &labels))
}

/// The labels of every container that has all of `labels` (`Containers/List` with a
/// containerd filter).
pub async fn list_labelled(
    socket: &Path,
    labels: &[(&str, &str)],
) -> Result<Vec<HashMap<String, String>>> {
    let filter = labels
        .iter()
        .map(|(key, value)| format!("labels.\"{key}\"=={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let request = with_namespace!(
        ListContainersRequest {
            filters: vec![filter]
        },
        NAMESPACE
    );
    let listed = client(socket).await?.list(request).await?.into_inner();
    Ok(listed.containers.into_iter().map(|c| c.labels).collect())
}
