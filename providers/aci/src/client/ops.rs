//! The ARM operations skylet calls: each one's name as the spec spells it
//! (the metrics' `operation` label, error messages), the RBAC action it
//! needs (named when Azure refuses it) and whether repeating it is
//! harmless (after an I/O failure only idempotent operations are retried:
//! [`super::send`]).

/// One ARM operation: its name (metrics, errors), the RBAC action it needs
/// and whether repeating it is harmless.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Op {
    pub(crate) name: &'static str,
    pub(super) action: &'static str,
    pub(super) idempotent: bool,
}

pub(super) const PUT_GROUP: Op = Op {
    name: "ContainerGroups_CreateOrUpdate",
    action: "Microsoft.ContainerInstance/containerGroups/write",
    idempotent: true,
};
pub(super) const GET_GROUP: Op = Op {
    name: "ContainerGroups_Get",
    action: "Microsoft.ContainerInstance/containerGroups/read",
    idempotent: true,
};
pub(crate) const LIST_GROUPS: Op = Op {
    name: "ContainerGroups_ListByResourceGroup",
    action: "Microsoft.ContainerInstance/containerGroups/read",
    idempotent: true,
};
pub(super) const STOP_GROUP: Op = Op {
    name: "ContainerGroups_Stop",
    action: "Microsoft.ContainerInstance/containerGroups/stop/action",
    idempotent: true,
};
pub(super) const DELETE_GROUP: Op = Op {
    name: "ContainerGroups_Delete",
    action: "Microsoft.ContainerInstance/containerGroups/delete",
    idempotent: true,
};
pub(super) const GET_OPERATION: Op = Op {
    name: "Operations_GetStatus",
    action: "Microsoft.ContainerInstance/locations/operations/read",
    idempotent: true,
};
pub(super) const LIST_LOGS: Op = Op {
    name: "Containers_ListLogs",
    action: "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
    idempotent: true,
};
pub(super) const EXEC: Op = Op {
    name: "Containers_ExecuteCommand",
    action: "Microsoft.ContainerInstance/containerGroups/containers/exec/action",
    idempotent: false,
};
pub(super) const ATTACH: Op = Op {
    name: "Containers_Attach",
    action: "Microsoft.ContainerInstance/containerGroups/containers/attach/action",
    idempotent: false,
};
pub(super) const USAGES: Op = Op {
    name: "Location_ListUsage",
    action: "Microsoft.ContainerInstance/locations/usages/read",
    idempotent: true,
};
