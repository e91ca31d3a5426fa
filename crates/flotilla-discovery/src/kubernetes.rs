//! Kubernetes discovery: the pods of the service, listed from the API server.

use std::time::Duration;

use flotilla_core::DiscoverySettings;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client, Config};

use crate::{BoxFuture, ContactPoint, DiscoveryError, ServiceDiscovery};

/// Contact points from the Kubernetes API: `GET /api/v1/namespaces/<ns>/pods?labelSelector=…`,
/// keeping the pods that are Running, not being deleted and have an IP; each pod's IP is a
/// contact point, with the port of its container port named `port-name` (a pod without one is
/// skipped) or no port when `port-name` is empty.
///
/// The client configuration is inferred as `kubectl` does (`$KUBECONFIG`, `~/.kube/config`, or
/// the in-cluster service account, which needs RBAC `list` on `pods`), unless `api-server`
/// gives a URL.
pub struct KubernetesDiscovery {
    api: Api<Pod>,
    namespace: String,
    selector: String,
    port_name: String,
    timeout: Duration,
}

impl std::fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDiscovery")
            .field("namespace", &self.namespace)
            .field("selector", &self.selector)
            .field("port_name", &self.port_name)
            .finish_non_exhaustive()
    }
}

impl KubernetesDiscovery {
    /// Builds the client for `settings`. Nothing is asked of the API server yet.
    pub async fn connect(settings: &DiscoverySettings) -> Result<Self, DiscoveryError> {
        let config_error = |e: String| DiscoveryError::Config(format!("kubernetes: {e}"));
        let mut config = match &settings.api_server {
            Some(url) => Config::new(
                url.parse()
                    .map_err(|e| config_error(format!("api-server {url:?} is not a URL: {e}")))?,
            ),
            None => Config::infer()
                .await
                .map_err(|e| config_error(format!("no client configuration: {e}")))?,
        };
        config.connect_timeout = Some(settings.resolve_timeout);
        config.read_timeout = Some(settings.resolve_timeout);
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)
            .map_err(|e| config_error(format!("cannot build the client: {e}")))?;
        Ok(Self {
            api: Api::namespaced(client, &namespace),
            namespace,
            selector: settings
                .pod_label_selector
                .replace("%s", &settings.service_name),
            port_name: settings.port_name.clone(),
            timeout: settings.resolve_timeout,
        })
    }

    /// The label selector it lists pods with.
    pub fn selector(&self) -> &str {
        &self.selector
    }

    fn failed(&self, reason: impl std::fmt::Display) -> DiscoveryError {
        DiscoveryError::Lookup {
            method: "kubernetes",
            what: format!("pods {:?} in namespace {}", self.selector, self.namespace),
            reason: reason.to_string(),
        }
    }

    /// The contact point of one pod, if it is one.
    fn contact_point(&self, pod: &Pod) -> Option<ContactPoint> {
        let name = pod.metadata.name.as_deref().unwrap_or("?");
        if pod.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let status = pod.status.as_ref()?;
        if status.phase.as_deref() != Some("Running") {
            return None;
        }
        let ip = status.pod_ip.clone()?;
        if self.port_name.is_empty() {
            return Some(ContactPoint {
                host: ip,
                port: None,
            });
        }
        let port = pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(self.port_name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok());
        if port.is_none() {
            tracing::debug!(
                "pod {name} has no container port named {:?}: not a contact point",
                self.port_name
            );
        }
        Some(ContactPoint {
            host: ip,
            port: Some(port?),
        })
    }
}

impl ServiceDiscovery for KubernetesDiscovery {
    fn method(&self) -> &'static str {
        "kubernetes"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Vec<ContactPoint>, DiscoveryError>> {
        Box::pin(async move {
            let params = ListParams::default().labels(&self.selector);
            let pods = match tokio::time::timeout(self.timeout, self.api.list(&params)).await {
                Ok(Ok(pods)) => pods,
                Ok(Err(e)) => return Err(self.failed(e)),
                Err(_) => return Err(self.failed(format!("no answer within {:?}", self.timeout))),
            };
            Ok(pods
                .items
                .iter()
                .filter_map(|p| self.contact_point(p))
                .collect())
        })
    }
}
