//! Paged lists: every page of a list answer, following each `nextLink`
//! (on ARM's own origin only, never in a loop).

use std::collections::HashSet;

use azure_core::http::{Method, Url};
use serde::{Deserialize, de::DeserializeOwned};

use super::{ArmClient, ArmError, Op};

/// A page of a list answer (`ContainerGroupListResult`, `UsageListResult`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(default)]
    next_link: Option<String>,
}

impl ArmClient {
    pub(super) async fn list_all<T: DeserializeOwned>(
        &self,
        op: Op,
        first: Url,
    ) -> Result<Vec<T>, ArmError> {
        let mut url = first;
        let mut items = Vec::new();
        let mut seen = HashSet::new();
        loop {
            let answer = self.send(op, Method::Get, &url, None).await?;
            if answer.status != 200 {
                return Err(answer.error(op));
            }
            let page: Page<T> = answer.json(op)?;
            items.extend(page.value);
            match page.next_link.filter(|l| !l.trim().is_empty()) {
                None => return Ok(items),
                Some(link) => {
                    if !seen.insert(link.clone()) {
                        return Err(ArmError::Protocol {
                            operation: op.name,
                            message: "nextLink loops".to_owned(),
                        });
                    }
                    url = self.follow(op, &link)?;
                }
            }
        }
    }
}
