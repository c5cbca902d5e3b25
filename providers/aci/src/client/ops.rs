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
    /// Which API serves it.
    pub(super) plane: Plane,
}

/// The API an operation belongs to: its endpoint, token and metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plane {
    /// ARM (`management.azure.com`), service label [`super::SERVICE`].
    Arm,
    /// Azure Monitor's metrics data plane (`*.metrics.monitor.azure.com`),
    /// service label [`super::MONITOR_SERVICE`].
    Metrics,
}

pub(super) const PUT_GROUP: Op = Op {
    name: "ContainerGroups_CreateOrUpdate",
    action: "Microsoft.ContainerInstance/containerGroups/write",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const GET_GROUP: Op = Op {
    name: "ContainerGroups_Get",
    action: "Microsoft.ContainerInstance/containerGroups/read",
    idempotent: true,
    plane: Plane::Arm,
};
pub(crate) const LIST_GROUPS: Op = Op {
    name: "ContainerGroups_ListByResourceGroup",
    action: "Microsoft.ContainerInstance/containerGroups/read",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const STOP_GROUP: Op = Op {
    name: "ContainerGroups_Stop",
    action: "Microsoft.ContainerInstance/containerGroups/stop/action",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const DELETE_GROUP: Op = Op {
    name: "ContainerGroups_Delete",
    action: "Microsoft.ContainerInstance/containerGroups/delete",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const GET_OPERATION: Op = Op {
    name: "Operations_GetStatus",
    action: "Microsoft.ContainerInstance/locations/operations/read",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const LIST_LOGS: Op = Op {
    name: "Containers_ListLogs",
    action: "Microsoft.ContainerInstance/containerGroups/containers/logs/read",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const EXEC: Op = Op {
    name: "Containers_ExecuteCommand",
    action: "Microsoft.ContainerInstance/containerGroups/containers/exec/action",
    idempotent: false,
    plane: Plane::Arm,
};
pub(super) const ATTACH: Op = Op {
    name: "Containers_Attach",
    action: "Microsoft.ContainerInstance/containerGroups/containers/attach/action",
    idempotent: false,
    plane: Plane::Arm,
};
pub(super) const USAGES: Op = Op {
    name: "Location_ListUsage",
    action: "Microsoft.ContainerInstance/locations/usages/read",
    idempotent: true,
    plane: Plane::Arm,
};
pub(super) const METRICS_BATCH: Op = Op {
    name: "Batch",
    action: "Microsoft.Insights/Metrics/Read",
    idempotent: true,
    plane: Plane::Metrics,
};

impl Op {
    /// Its `service` label in the metrics.
    pub(crate) fn service(self) -> &'static str {
        match self.plane {
            Plane::Arm => super::SERVICE,
            Plane::Metrics => super::MONITOR_SERVICE,
        }
    }
}
