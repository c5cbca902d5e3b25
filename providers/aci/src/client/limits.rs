//! ARM's and ACI's published API rate limits, which [`ArmClient`] keeps
//! to on its side ([`skylet_provider::ratelimit`]): every attempt of an
//! operation first takes a token of each bucket covering it, so a burst of
//! pods is spread over time instead of being answered 429 and retried.
//!
//! | bucket | capacity | refill/s | operations | source |
//! |---|---|---|---|---|
//! | `reads` | 250 | 25 | every GET | ARM subscription limits (token bucket, since 2024) |
//! | `writes` | 200 | 10 | every PUT and POST | same |
//! | `deletes` | 200 | 10 | every DELETE | same |
//! | `creates-5m` | 100 | 100/300 | `ContainerGroups_CreateOrUpdate` | ACI: 100 container creates per 5 minutes |
//! | `creates-1h` | 300 | 300/3600 | `ContainerGroups_CreateOrUpdate` | ACI: 300 container creates per hour |
//! | `deletes-5m` | 100 | 100/300 | `ContainerGroups_Delete` | ACI: 100 container deletes per 5 minutes |
//! | `deletes-1h` | 300 | 300/3600 | `ContainerGroups_Delete` | ACI: 300 container deletes per hour |
//!
//! Sources (learn.microsoft.com): "Understand how Azure Resource Manager
//! throttles requests" (azure-resource-manager/management/request-limits-and-throttling;
//! per subscription, service principal and operation type, per region) and
//! "Resource availability & quota limits for ACI"
//! (container-instances/container-instances-resource-and-quota-limits).
//! ACI's create and delete limits are raised by a support request: raise
//! the buckets with them (`--aci-rate-limit creates-1h=3000:0.8333`), or
//! turn one off (`--aci-rate-limit creates-1h=off`). ACI's limits are
//! stated as windows; here each window is a bucket of its size refilled
//! evenly over the window, as the ACI emulator enforces them. Every PUT is
//! counted as a create (skylet PUTs a group to create it), every DELETE as
//! a delete.
//!
//! Azure Monitor's metrics data plane (`kubectl top`) is not ARM and has
//! no bucket here.

use skylet_provider::ratelimit::BucketSpec;

#[cfg(doc)]
use super::ArmClient;
use super::ops::{
    ATTACH, DELETE_GROUP, EXEC, GET_GROUP, GET_OPERATION, LIST_GROUPS, LIST_LOGS, PUT_GROUP,
    STOP_GROUP, USAGES,
};

/// The published buckets (see the module docs).
pub const PUBLISHED: &[BucketSpec] = &[
    BucketSpec {
        name: "reads",
        capacity: 250,
        refill_per_second: 25.0,
        operations: &[
            GET_GROUP.name,
            LIST_GROUPS.name,
            GET_OPERATION.name,
            LIST_LOGS.name,
            USAGES.name,
        ],
    },
    BucketSpec {
        name: "writes",
        capacity: 200,
        refill_per_second: 10.0,
        operations: &[PUT_GROUP.name, STOP_GROUP.name, EXEC.name, ATTACH.name],
    },
    BucketSpec {
        name: "deletes",
        capacity: 200,
        refill_per_second: 10.0,
        operations: &[DELETE_GROUP.name],
    },
    BucketSpec {
        name: "creates-5m",
        capacity: 100,
        refill_per_second: 100.0 / 300.0,
        operations: &[PUT_GROUP.name],
    },
    BucketSpec {
        name: "creates-1h",
        capacity: 300,
        refill_per_second: 300.0 / 3600.0,
        operations: &[PUT_GROUP.name],
    },
    BucketSpec {
        name: "deletes-5m",
        capacity: 100,
        refill_per_second: 100.0 / 300.0,
        operations: &[DELETE_GROUP.name],
    },
    BucketSpec {
        name: "deletes-1h",
        capacity: 300,
        refill_per_second: 300.0 / 3600.0,
        operations: &[DELETE_GROUP.name],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arm_operation_takes_a_subscription_token() {
        for op in [
            GET_GROUP,
            LIST_GROUPS,
            GET_OPERATION,
            LIST_LOGS,
            USAGES,
            PUT_GROUP,
            STOP_GROUP,
            EXEC,
            ATTACH,
            DELETE_GROUP,
        ] {
            let arm = PUBLISHED[..3]
                .iter()
                .filter(|b| b.operations.contains(&op.name))
                .count();
            assert_eq!(arm, 1, "{}", op.name);
        }
    }
}
