//! Changes to a running home pod, passed on to its remote pod: a new image
//! (the remote kubelet restarts the container), ephemeral containers
//! (`kubectl debug`: the `ephemeralcontainers` subresource) and in-place
//! resize (the `resize` subresource; the remote kubelet's answer, the
//! `PodResizePending` and `PodResizeInProgress` conditions, comes back
//! with the remote pod's status). Each patch is idempotent.

use k8s_openapi::api::core::v1::Pod;
use kube::{
    ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;
use skylet_provider::{PodRef, ProviderError, Result};

use crate::{KubeProvider, calls::op, classify};

impl KubeProvider {
    /// The remote pod of `home`, or NotFound.
    async fn remote_of(&self, home: &Pod) -> Result<(String, String)> {
        let r = PodRef::of(home);
        let remote = self
            .find(&r)
            .await?
            .ok_or_else(|| ProviderError::NotFound(format!("no remote pod for {r}")))?;
        Ok((remote.namespace().unwrap_or_default(), remote.name_any()))
    }

    /// Sets the images of the remote pod's containers.
    pub(crate) async fn patch_images(&self, home: &Pod, images: &[(String, String)]) -> Result<()> {
        let (ns, name) = self.remote_of(home).await?;
        let containers: Vec<_> = images
            .iter()
            .map(|(c, image)| json!({"name": c, "image": image}))
            .collect();
        let patch = json!({"spec": {"containers": containers}});
        self.calls
            .run(
                op::PATCH_POD,
                self.pods(&ns)
                    .patch(&name, &PatchParams::default(), &Patch::Strategic(patch)),
            )
            .await
            .map_err(|e| classify("changing the remote pod's image", e))?;
        Ok(())
    }

    /// Adds the home pod's ephemeral containers to the remote pod.
    pub(crate) async fn patch_ephemeral(&self, home: &Pod) -> Result<()> {
        let (ns, name) = self.remote_of(home).await?;
        let ephemeral = home
            .spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.clone())
            .unwrap_or_default();
        let patch = json!({"spec": {"ephemeralContainers": ephemeral}});
        self.calls
            .run(
                op::PATCH_EPHEMERAL,
                self.pods(&ns).patch_ephemeral_containers(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                ),
            )
            .await
            .map_err(|e| classify("adding ephemeral containers to the remote pod", e))?;
        Ok(())
    }

    /// Asks the remote cluster to resize the remote pod's containers to the
    /// home pod's resources.
    pub(crate) async fn patch_resize(&self, home: &Pod) -> Result<()> {
        let (ns, name) = self.remote_of(home).await?;
        let containers: Vec<_> = home
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| json!({"name": c.name, "resources": c.resources}))
            .collect();
        let patch = json!({"spec": {"containers": containers}});
        self.calls
            .run(
                op::PATCH_RESIZE,
                self.pods(&ns).patch_subresource(
                    "resize",
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                ),
            )
            .await
            .map_err(|e| classify("resizing the remote pod", e))?;
        Ok(())
    }
}
