//! Remote writes of reflected objects: create, update in place (the stored
//! object with skylet's parts replaced, guarded by its resourceVersion) or
//! re-create when a field cannot change, delete. An object of the same name
//! that skylet did not write is never touched.

use std::fmt::Debug;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{core::v1::ConfigMap, core::v1::Service, discovery::v1::EndpointSlice},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, PostParams},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    calls::{Calls, op},
    translate::{CLUSTER_ID, Context, NODE},
};

/// What a write did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<K> {
    /// Created or updated: the object as the apiserver returned it.
    Written(K),
    /// Deleted, to be created again (a field that cannot change changed).
    Recreating,
    /// An object of that name exists that skylet did not write.
    Foreign,
}

/// A kind skylet reflects into the remote cluster.
pub(crate) trait Mirrored:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The remote calls on this kind (`crate::calls::op`).
    const READ: &'static str;
    const CREATE: &'static str;
    const REPLACE: &'static str;
    const DELETE: &'static str;
    /// For logs.
    const WHAT: &'static str;

    /// Copies what skylet owns of `desired` into `self`, an existing copy.
    fn take(&mut self, desired: &Self);

    /// Whether `self` can be updated into `desired` (else it is re-created).
    fn compatible(&self, _desired: &Self) -> bool {
        true
    }
}

impl Mirrored for Service {
    const READ: &'static str = op::READ_SERVICE;
    const CREATE: &'static str = op::CREATE_SERVICE;
    const REPLACE: &'static str = op::REPLACE_SERVICE;
    const DELETE: &'static str = op::DELETE_SERVICE;
    const WHAT: &'static str = "Service";

    fn take(&mut self, desired: &Self) {
        let (Some(have), Some(want)) = (self.spec.as_mut(), desired.spec.as_ref()) else {
            self.spec = desired.spec.clone();
            return;
        };
        have.selector = None;
        have.ports = want.ports.clone();
        have.external_name = want.external_name.clone();
        have.session_affinity = want.session_affinity.clone();
        have.session_affinity_config = want.session_affinity_config.clone();
        have.publish_not_ready_addresses = want.publish_not_ready_addresses;
    }

    fn compatible(&self, desired: &Self) -> bool {
        super::desired::headless(self) == super::desired::headless(desired)
            && super::desired::service_type(self) == super::desired::service_type(desired)
    }
}

impl Mirrored for EndpointSlice {
    const READ: &'static str = op::READ_ENDPOINT_SLICE;
    const CREATE: &'static str = op::CREATE_ENDPOINT_SLICE;
    const REPLACE: &'static str = op::REPLACE_ENDPOINT_SLICE;
    const DELETE: &'static str = op::DELETE_ENDPOINT_SLICE;
    const WHAT: &'static str = "EndpointSlice";

    fn take(&mut self, desired: &Self) {
        self.endpoints = desired.endpoints.clone();
        self.ports = desired.ports.clone();
    }

    fn compatible(&self, desired: &Self) -> bool {
        self.address_type == desired.address_type
    }
}

impl Mirrored for ConfigMap {
    const READ: &'static str = op::READ_CONFIG_MAP;
    const CREATE: &'static str = op::CREATE_CONFIG_MAP;
    const REPLACE: &'static str = op::REPLACE_CONFIG_MAP;
    const DELETE: &'static str = op::DELETE_CONFIG_MAP;
    const WHAT: &'static str = "ConfigMap";

    fn take(&mut self, desired: &Self) {
        self.data = desired.data.clone();
    }
}

/// Whether `obj` is one skylet wrote for this node.
pub(crate) fn ours<K: Resource>(obj: &K, ctx: &Context) -> bool {
    let l = obj.meta().labels.as_ref();
    l.and_then(|l| l.get(CLUSTER_ID)) == Some(&ctx.cluster_id)
        && l.and_then(|l| l.get(NODE)) == Some(&ctx.node)
}

/// Writes the remote objects of one kind.
pub(crate) struct Writer<'a> {
    pub(crate) remote: &'a Client,
    pub(crate) calls: &'a Calls,
    pub(crate) ctx: &'a Context,
}

impl Writer<'_> {
    fn api<K: Mirrored>(&self, ns: &str) -> Api<K> {
        Api::namespaced(self.remote.clone(), ns)
    }

    /// Makes the remote object `desired` exist as skylet wants it;
    /// `existing` is skylet's copy if the watch has seen one.
    pub(crate) async fn put<K: Mirrored>(
        &self,
        existing: Option<&K>,
        desired: &K,
    ) -> Result<Outcome<K>, kube::Error> {
        let ns = desired.namespace().unwrap_or_default();
        let name = desired.name_any();
        let api = self.api::<K>(&ns);
        let existing = match existing {
            Some(e) => e.clone(),
            None => {
                let created = self
                    .calls
                    .run(K::CREATE, api.create(&PostParams::default(), desired))
                    .await;
                match created {
                    Ok(k) => return Ok(Outcome::Written(k)),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e),
                }
                // there already: skylet's (the watch has not told yet) or not
                let found = self.calls.run(K::READ, api.get(&name)).await?;
                if !ours(&found, self.ctx) {
                    return Ok(Outcome::Foreign);
                }
                found
            }
        };
        if !existing.compatible(desired) {
            self.delete::<K>(&ns, &name).await?;
            return Ok(Outcome::Recreating);
        }
        let mut obj = existing;
        obj.take(desired);
        let m = obj.meta_mut();
        let want = desired.meta();
        m.labels
            .get_or_insert_with(Default::default)
            .extend(want.labels.clone().unwrap_or_default());
        m.annotations
            .get_or_insert_with(Default::default)
            .extend(want.annotations.clone().unwrap_or_default());
        m.owner_references.clone_from(&want.owner_references);
        let replaced = self
            .calls
            .run(K::REPLACE, api.replace(&name, &PostParams::default(), &obj))
            .await;
        match replaced {
            Ok(k) => Ok(Outcome::Written(k)),
            // a field the apiserver will not change in place
            Err(kube::Error::Api(s)) if s.code == 422 => {
                self.delete::<K>(&ns, &name).await?;
                Ok(Outcome::Recreating)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a remote object (gone already is fine).
    pub(crate) async fn delete<K: Mirrored>(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<(), kube::Error> {
        let deleted = self
            .calls
            .run(
                K::DELETE,
                self.api::<K>(ns).delete(name, &DeleteParams::background()),
            )
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
