//! Reflection: copies of the home ConfigMaps and Secrets that remote pods
//! reference, owned by those remote pods and kept in sync.
//!
//! A copy lists every remote pod that uses it in its ownerReferences, so the
//! remote cluster's garbage collector deletes it with its last pod. Each
//! sweep compares the home object's resourceVersion with the one last copied
//! and updates the copy when it changed: a ConfigMap change at home reaches
//! the remote copy (and, through the remote kubelet, mounted volumes of
//! running pods) within one sweep interval. Costs one GET per reflected
//! object per sweep.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ConfigMap, Pod, Secret},
    apimachinery::pkg::apis::meta::v1::OwnerReference,
};
use kube::{Api, Client, Resource, api::PostParams};
use serde::{Serialize, de::DeserializeOwned};
use skylet_provider::Result;

use crate::{
    classify,
    translate::{CLUSTER_ID, Context, References},
};

/// Annotation with the home object's `namespace/name`.
pub(crate) const ORIGIN: &str = "skylet.io/origin";
/// Annotation with the home resourceVersion last copied.
pub(crate) const ORIGIN_VERSION: &str = "skylet.io/origin-resource-version";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    ConfigMap,
    Secret,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    home_ns: String,
    remote_ns: String,
    name: String,
}

/// The reflected objects and the home versions last copied.
pub(crate) struct Reflections {
    home: Client,
    remote: Client,
    ctx: Context,
    tracked: Mutex<HashMap<Key, String>>,
}

/// What differs between ConfigMaps and Secrets.
trait Reflected:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// Copies the payload of `from` into `self`.
    fn copy_payload(&mut self, from: &Self);
}

impl Reflected for ConfigMap {
    fn copy_payload(&mut self, from: &Self) {
        self.data = from.data.clone();
        self.binary_data = from.binary_data.clone();
    }
}

impl Reflected for Secret {
    fn copy_payload(&mut self, from: &Self) {
        self.data = from.data.clone();
        self.type_ = from.type_.clone();
    }
}

fn owner(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    }
}

impl Reflections {
    pub(crate) fn new(home: Client, remote: Client, ctx: Context) -> Self {
        Self {
            home,
            remote,
            ctx,
            tracked: Mutex::default(),
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<Key, String>> {
        self.tracked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Copies what `refs` names from `home_ns` to `remote_ns`, adding `pod` as an owner.
    pub(crate) async fn reflect(
        &self,
        home_ns: &str,
        remote_ns: &str,
        refs: &References,
        pod: &Pod,
    ) -> Result<()> {
        for name in &refs.config_maps {
            let key = Key {
                kind: Kind::ConfigMap,
                home_ns: home_ns.into(),
                remote_ns: remote_ns.into(),
                name: name.clone(),
            };
            self.copy::<ConfigMap>(&key, Some(pod)).await?;
        }
        for name in &refs.secrets {
            let key = Key {
                kind: Kind::Secret,
                home_ns: home_ns.into(),
                remote_ns: remote_ns.into(),
                name: name.clone(),
            };
            self.copy::<Secret>(&key, Some(pod)).await?;
        }
        Ok(())
    }

    /// Brings every copy up to date with its home object.
    pub(crate) async fn sync(&self) {
        let keys: Vec<(Key, String)> = self
            .tracked()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, _) in keys {
            let r = match key.kind {
                Kind::ConfigMap => self.copy::<ConfigMap>(&key, None).await,
                Kind::Secret => self.copy::<Secret>(&key, None).await,
            };
            if let Err(e) = r {
                tracing::warn!(name = %key.name, namespace = %key.remote_ns, error = %e, "cannot sync a reflected object");
            }
        }
    }

    /// Creates or updates the remote copy of one object; with `pod`, adds it
    /// as an owner. Without `pod` (a sync), only copies a changed payload and
    /// forgets copies the remote garbage collector removed.
    async fn copy<K: Reflected>(&self, key: &Key, pod: Option<&Pod>) -> Result<()> {
        let what = format!("{:?} {}/{}", key.kind, key.home_ns, key.name);
        let home: Api<K> = Api::namespaced(self.home.clone(), &key.home_ns);
        let Some(src) = home
            .get_opt(&key.name)
            .await
            .map_err(|e| classify(&format!("reading home {what}"), e))?
        else {
            // an optional reference to a missing object; nothing to copy
            return Ok(());
        };
        let version = src.meta().resource_version.clone().unwrap_or_default();
        if pod.is_none() && self.tracked().get(key) == Some(&version) {
            return Ok(());
        }
        let remote: Api<K> = Api::namespaced(self.remote.clone(), &key.remote_ns);
        for _attempt in 0..3 {
            let existing = remote
                .get_opt(&key.name)
                .await
                .map_err(|e| classify(&format!("reading remote {what}"), e))?;
            let r = match existing {
                None if pod.is_none() => {
                    // its last pod is gone and so is the copy
                    self.tracked().remove(key);
                    return Ok(());
                }
                None => {
                    let mut obj = src.clone();
                    let m = obj.meta_mut();
                    *m = Default::default();
                    m.name = Some(key.name.clone());
                    m.namespace = Some(key.remote_ns.clone());
                    m.labels = Some(BTreeMap::from([(
                        CLUSTER_ID.to_owned(),
                        self.ctx.cluster_id.clone(),
                    )]));
                    m.annotations = Some(BTreeMap::from([
                        (ORIGIN.to_owned(), format!("{}/{}", key.home_ns, key.name)),
                        (ORIGIN_VERSION.to_owned(), version.clone()),
                    ]));
                    m.owner_references = pod.map(|p| vec![owner(p)]);
                    remote
                        .create(&PostParams::default(), &obj)
                        .await
                        .map(|_| ())
                }
                Some(mut obj) => {
                    obj.copy_payload(&src);
                    let m = obj.meta_mut();
                    m.annotations
                        .get_or_insert_with(Default::default)
                        .insert(ORIGIN_VERSION.to_owned(), version.clone());
                    if let Some(p) = pod {
                        let owners = m.owner_references.get_or_insert_with(Vec::new);
                        let o = owner(p);
                        if !owners.iter().any(|x| x.uid == o.uid) {
                            owners.push(o);
                        }
                    }
                    remote
                        .replace(&key.name, &PostParams::default(), &obj)
                        .await
                        .map(|_| ())
                }
            };
            match r {
                Ok(()) => {
                    self.tracked().insert(key.clone(), version);
                    return Ok(());
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue, // raced; read again
                Err(e) => return Err(classify(&format!("copying {what}"), e)),
            }
        }
        Err(skylet_provider::ProviderError::transient(format!(
            "copying {what}: conflicting updates"
        )))
    }
}
