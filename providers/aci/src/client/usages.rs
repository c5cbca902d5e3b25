//! Location usages: the quotas of a location and their use (what the
//! node's capacity is derived from).

use serde::{Deserialize, Serialize};

use super::{ArmClient, ArmError, RESOURCE_PROVIDER, ops::USAGES};

/// `UsageName`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageName {
    /// The name (`ContainerGroups`, `StandardCores`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Its display form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localized_value: Option<String>,
}

/// `Usage`: one quota of a location.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Id of the usage result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unit (`Count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Current use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_value: Option<i32>,
    /// The limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i32>,
    /// What is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<UsageName>,
}

impl ArmClient {
    /// Location_ListUsage: the quotas of `location` and their use.
    ///
    /// # Errors
    /// [`ArmError`].
    pub async fn usages(&self, location: &str) -> Result<Vec<Usage>, ArmError> {
        let url = self.url(
            &[
                "subscriptions",
                &self.subscription_id,
                "providers",
                RESOURCE_PROVIDER,
                "locations",
                location,
                "usages",
            ],
            &[],
        );
        self.counted(USAGES, self.list_all(USAGES, url).await)
    }
}
