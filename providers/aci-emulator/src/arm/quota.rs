//! Quotas: whether a new group fits (ARM's refusals of a create) and the
//! location's usages (`Location_ListUsage`), from the same counts.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::reply::{ArmError, ArmResult, Reply};
use super::{PROVIDER, Req};
use crate::state::{self, Group};
use crate::{App, rules};

/// Whether a new group fits, as ARM decides before it accepts a create:
/// 409 `ServiceUnavailable` while the location has no room
/// ([`crate::Emulator::set_capacity_available`]), 409
/// `ContainerGroupQuotaReached` naming the quota the group would exceed
/// (`ContainerGroups`, then `StandardCores` or, for a Spot group,
/// `StandardSpotCores`), with ARM's wording.
pub(super) fn admit(app: &App, store: &state::Store, body: &Value) -> Result<(), ArmError> {
    let location = &app.config.location;
    let cpu = state::requested_cpu(body);
    if !app.capacity_available() {
        let memory: f64 = body
            .pointer("/properties/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| {
                        c.pointer("/properties/resources/requests/memoryInGB")?
                            .as_f64()
                    })
                    .sum()
            })
            .unwrap_or(0.0);
        let os = body
            .pointer("/properties/osType")
            .and_then(Value::as_str)
            .unwrap_or("Linux");
        return Err(ArmError::new(
            StatusCode::CONFLICT,
            "ServiceUnavailable",
            format!(
                "The requested resource is not available in the location '{location}' at this moment. Please retry with a different resource request or in another location. Resource requested: '{cpu}' CPU '{memory}' GB memory '{os}' OS"
            ),
        ));
    }
    let exceeded = |quota: &str, limit: u32, usage: f64, requested: f64| {
        #[allow(clippy::cast_possible_truncation)] // counts within a quota's magnitude
        let whole = |v: f64| v.ceil().min(f64::from(u32::MAX)) as u64;
        ArmError::new(
            StatusCode::CONFLICT,
            "ContainerGroupQuotaReached",
            format!(
                "Resource type '{PROVIDER}/containerGroups' container group quota '{quota}' exceeded in region '{location}'. Limit: '{limit}', Usage: '{}', Requested: '{}'.",
                whole(usage),
                whole(requested)
            ),
        )
    };
    let groups = store.groups.len();
    if groups >= app.config.container_group_quota as usize {
        #[allow(clippy::cast_precision_loss)] // a count of groups
        return Err(exceeded(
            "ContainerGroups",
            app.config.container_group_quota,
            groups as f64,
            1.0,
        ));
    }
    let spot = state::is_spot(body);
    let (quota, limit) = if spot {
        ("StandardSpotCores", app.config.spot_core_quota)
    } else {
        ("StandardCores", app.config.core_quota)
    };
    let used = cores(store, spot);
    // a small epsilon: requests are in hundredths of a core
    if used + cpu > f64::from(limit) + 1e-6 {
        return Err(exceeded(quota, limit, used, cpu));
    }
    Ok(())
}

/// The cores the Regular (or Spot) groups request together.
fn cores(store: &state::Store, spot: bool) -> f64 {
    store
        .groups
        .values()
        .filter(|g| state::is_spot(&g.body) == spot)
        .map(Group::cpu)
        .sum()
}

/// `Location_ListUsage`: the three quotas and what the groups use of them.
pub(super) fn usages(app: &Arc<App>, r: &Req) -> ArmResult {
    let location = r.param("location");
    if !rules::same_location(location, &app.config.location) {
        return Err(ArmError::bad_request(
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{location}' is not available for resource type '{PROVIDER}/containerGroups'."
            ),
        ));
    }
    let store = app.lock_store();
    let groups = i32::try_from(store.groups.len()).unwrap_or(i32::MAX);
    let (regular, spot) = (cores(&store, false), cores(&store, true));
    drop(store);
    #[allow(clippy::cast_possible_truncation)] // at most the quota's magnitude
    let whole = |c: f64| c.ceil().min(f64::from(i32::MAX)) as i32;
    let base = format!(
        "/subscriptions/{}/providers/{PROVIDER}/locations/{}/usages",
        app.config.subscription_id, app.config.location
    );
    let usage = |name: &str, localized: &str, current: i32, limit: u32| {
        json!({
            "id": format!("{base}/{name}"),
            "unit": "Count",
            "currentValue": current,
            "limit": i32::try_from(limit).unwrap_or(i32::MAX),
            "name": {"value": name, "localizedValue": localized},
        })
    };
    Ok(Reply::json(
        StatusCode::OK,
        json!({"value": [
            usage("ContainerGroups", "Container Groups", groups, app.config.container_group_quota),
            usage("StandardCores", "Standard Cores", whole(regular), app.config.core_quota),
            usage("StandardSpotCores", "Standard Spot Cores", whole(spot), app.config.spot_core_quota),
        ]}),
    ))
}
