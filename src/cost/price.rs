//! [`Price`]: what a backend charges, from the `price:` of its entry in the
//! config file.
//!
//! ```yaml
//! backends:
//!   - name: ecs-east
//!     provider: aws-ecs
//!     price:
//!       vcpu-hour: 0.04048
//!       memory-gib-hour: 0.004445
//!       minimum-seconds: 60
//! ```
//!
//! Dollars only (no currency field): the exported series are
//! `..._dollars_total`.

use serde::{Deserialize, Serialize};
use skylet_provider::ConfigError;

/// The largest price per hour skylet takes, in dollars: prices are kept
/// exactly in whole pico-dollars, and nothing costs a million dollars an
/// hour per vCPU or GiB.
const MAX_HOURLY: f64 = 1_000_000.0;

/// A backend's price list.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Price {
    /// Dollars per vCPU-hour (`vcpu-hour`).
    pub vcpu_hour: f64,
    /// Dollars per GiB-hour (`memory-gib-hour`), a GiB being 2^30 bytes.
    /// AWS prices Fargate memory "per GB-hour" and means GiB: a task of
    /// "2 GB" has 2048 MiB, so the published figure goes here unchanged.
    /// Skylet sizes ACI groups in decimal GB (10^9 bytes): multiply
    /// Azure's per-GB figure by 1.073741824 (deploy/prices/azure-aci.yaml).
    pub memory_gib_hour: f64,
    /// The shortest duration an instance is billed for, in seconds
    /// (`minimum-seconds`; Fargate: 60). An instance that stops sooner is
    /// billed this long. Default 0.
    #[serde(default)]
    pub minimum_seconds: u64,
    /// Whether the backend runs on spot capacity (`spot`), for
    /// `kubecost_node_is_spot`; the price itself is what is charged, so
    /// give the spot price. Default false.
    #[serde(default)]
    pub spot: bool,
}

impl Price {
    /// The price of a backend's `price:` entry, validated; `field` names
    /// that entry in errors (`backends[0].price`).
    ///
    /// # Errors
    /// A key that is missing, unknown or of the wrong type, or a price
    /// that [`Price::validate`] refuses.
    pub fn from_yaml(value: serde_yaml_ng::Value, field: &str) -> Result<Self, ConfigError> {
        let price: Self = serde_yaml_ng::from_value(value).map_err(|e| {
            ConfigError::new(
                field,
                format!("{e}; expected vcpu-hour, memory-gib-hour, minimum-seconds and spot"),
            )
        })?;
        price.validate(field)?;
        Ok(price)
    }

    /// Refuses prices that are negative, not finite (`.nan`, `.inf`), or
    /// a million dollars an hour or more; the error names the key
    /// (`<field>.vcpu-hour`).
    ///
    /// # Errors
    /// The first price that is refused.
    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        for (key, v, unit) in [
            ("vcpu-hour", self.vcpu_hour, "dollars per vCPU-hour"),
            (
                "memory-gib-hour",
                self.memory_gib_hour,
                "dollars per GiB-hour",
            ),
        ] {
            if !(0.0..MAX_HOURLY).contains(&v) {
                return Err(ConfigError::new(
                    format!("{field}.{key}"),
                    format!(
                        "{v} is not a price: give {unit}, a number from 0 to less than {MAX_HOURLY}"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The vCPU price in whole pico-dollars per vCPU-hour.
    pub(super) fn vcpu_pico(&self) -> u64 {
        pico(self.vcpu_hour)
    }

    /// The memory price in whole pico-dollars per GiB-hour.
    pub(super) fn memory_pico(&self) -> u64 {
        pico(self.memory_gib_hour)
    }

    /// The minimum billed duration.
    pub(super) fn minimum(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.minimum_seconds)
    }
}

/// Dollars to whole pico-dollars, to the nearest (`0.04048` is exactly
/// 40,480,000,000). Validated prices fit; others saturate.
fn pico(dollars: f64) -> u64 {
    // a float-to-int `as` saturates, and NaN becomes 0
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let p = (dollars * 1e12).round() as u64;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn a_price_entry_parses_with_kebab_case_keys_and_defaults() {
        let p = Price::from_yaml(
            yaml("vcpu-hour: 0.04048\nmemory-gib-hour: 0.004445\nminimum-seconds: 60\n"),
            "backends[0].price",
        )
        .unwrap();
        assert_eq!(
            p,
            Price {
                vcpu_hour: 0.04048,
                memory_gib_hour: 0.004445,
                minimum_seconds: 60,
                spot: false,
            }
        );
        assert_eq!(
            (p.vcpu_pico(), p.memory_pico()),
            (40_480_000_000, 4_445_000_000)
        );
        let spot = Price::from_yaml(
            yaml("vcpu-hour: 0\nmemory-gib-hour: 0\nspot: true"),
            "price",
        )
        .unwrap();
        assert!(spot.spot);
        assert_eq!(spot.minimum_seconds, 0);
    }

    #[test]
    fn bad_prices_are_refused_naming_the_key() {
        for (text, field, needle) in [
            (
                "vcpu-hour: -0.1\nmemory-gib-hour: 0.004",
                "backends[1].price.vcpu-hour",
                "-0.1 is not a price",
            ),
            (
                "vcpu-hour: 0.04\nmemory-gib-hour: .nan",
                "backends[1].price.memory-gib-hour",
                "NaN is not a price",
            ),
            (
                "vcpu-hour: .inf\nmemory-gib-hour: 0.004",
                "backends[1].price.vcpu-hour",
                "inf is not a price",
            ),
            (
                "vcpu-hour: 2000000\nmemory-gib-hour: 0",
                "backends[1].price.vcpu-hour",
                "less than",
            ),
            (
                "vcpu-hour: 0.04\nmemory-gib-hour: 0.004\ncurrency: EUR",
                "backends[1].price",
                "unknown field `currency`",
            ),
            (
                "vcpu-hour: 0.04",
                "backends[1].price",
                "missing field `memory-gib-hour`",
            ),
            (
                "vcpu-hour: 0.04\nmemory-gib-hour: 0.004\nminimum-seconds: -1",
                "backends[1].price",
                "minimum-seconds",
            ),
        ] {
            let e = Price::from_yaml(yaml(text), "backends[1].price").unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn the_example_prices_parse() {
        for (file, text) in [
            ("aws-ecs", include_str!("../../deploy/prices/aws-ecs.yaml")),
            (
                "azure-aci",
                include_str!("../../deploy/prices/azure-aci.yaml"),
            ),
            (
                "kubernetes",
                include_str!("../../deploy/prices/kubernetes.yaml"),
            ),
            ("mock", include_str!("../../deploy/prices/mock.yaml")),
        ] {
            let p = Price::from_yaml(yaml(text), file).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(p.vcpu_hour > 0.0 && p.memory_gib_hour > 0.0, "{file}");
        }
        let fargate = Price::from_yaml(yaml(include_str!("../../deploy/prices/aws-ecs.yaml")), "f");
        assert_eq!(
            fargate.unwrap(),
            Price {
                vcpu_hour: 0.04048,
                memory_gib_hour: 0.004445,
                minimum_seconds: 60,
                spot: false,
            }
        );
    }
}
