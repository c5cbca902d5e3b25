//! Container groups: create or update (PUT), get, list (every page), stop
//! and delete.

use azure_core::http::Method;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    ArmClient, ArmError, LIST_GROUPS, Operation,
    ops::{DELETE_GROUP, GET_GROUP, PUT_GROUP, STOP_GROUP},
    send::json_body,
};

/// The outcome of [`ArmClient::put_group`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Put {
    /// 201: the group is new; 200: it existed (updated or unchanged).
    pub created: bool,
    /// The provisioning operation, when ARM announced one.
    pub operation: Option<Operation>,
}

impl ArmClient {
    /// ContainerGroups_CreateOrUpdate. Retried like every call (the name is
    /// deterministic, a repeat of the same body is a no-op).
    ///
    /// # Errors
    /// [`ArmError`]; a 400 about the body maps to `InvalidPod`.
    pub async fn put_group<T: Serialize + Sync>(
        &self,
        rg: &str,
        name: &str,
        body: &T,
    ) -> Result<Put, ArmError> {
        let op = PUT_GROUP;
        let result = async {
            let json = json_body(op, body)?;
            let answer = self
                .send(
                    op,
                    Method::Put,
                    &self.group_url(rg, name, &[], &[]),
                    Some(json),
                )
                .await?;
            match answer.status {
                200 | 201 => Ok(Put {
                    created: answer.status == 201,
                    operation: Operation::from_headers(&answer.headers),
                }),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// ContainerGroups_Get; `None` on any 404 (the group, or its resource
    /// group, does not exist).
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn get_group<T: DeserializeOwned>(
        &self,
        rg: &str,
        name: &str,
    ) -> Result<Option<T>, ArmError> {
        let op = GET_GROUP;
        let result = async {
            let answer = self
                .send(op, Method::Get, &self.group_url(rg, name, &[], &[]), None)
                .await?;
            match answer.status {
                200 => answer.json(op).map(Some),
                404 => Ok(None),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// ContainerGroups_ListByResourceGroup, every page (each page is one
    /// call in [`ApiMetrics`](skylet_provider::ApiMetrics)).
    ///
    /// # Errors
    /// [`ArmError`] (a missing resource group is a 404 `ResourceGroupNotFound`).
    pub async fn list_groups<T: DeserializeOwned>(&self, rg: &str) -> Result<Vec<T>, ArmError> {
        let url = self.groups_url(rg, &[], &[]);
        self.counted(LIST_GROUPS, self.list_all(LIST_GROUPS, url).await)
    }

    /// ContainerGroups_Stop; a group that does not exist is stopped.
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn stop_group(&self, rg: &str, name: &str) -> Result<(), ArmError> {
        let op = STOP_GROUP;
        let result = async {
            let answer = self
                .send(
                    op,
                    Method::Post,
                    &self.group_url(rg, name, &["stop"], &[]),
                    None,
                )
                .await?;
            match answer.status {
                200 | 202 | 204 | 404 => Ok(()),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }

    /// ContainerGroups_Delete: the operation to wait for (202), or `None`
    /// when the group is already gone (200, 204, 404).
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn delete_group(&self, rg: &str, name: &str) -> Result<Option<Operation>, ArmError> {
        let op = DELETE_GROUP;
        let result = async {
            let answer = self
                .send(
                    op,
                    Method::Delete,
                    &self.group_url(rg, name, &[], &[]),
                    None,
                )
                .await?;
            match answer.status {
                202 => Ok(Operation::from_headers(&answer.headers)),
                200 | 204 | 404 => Ok(None),
                _ => Err(answer.error(op)),
            }
        }
        .await;
        self.counted(op, result)
    }
}
