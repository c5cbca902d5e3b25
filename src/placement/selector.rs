//! Label selectors: matching, the node affinity terms a tier compiles to,
//! and the `kubectl` syntax (`a=b,c!=d,e in (f,g),!h`) of
//! `--placement-namespace-selector`.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::NodeSelectorRequirement, apimachinery::pkg::apis::meta::v1 as meta,
};

use super::crd::{LabelSelector, LabelSelectorRequirement, Operator};

/// Whether `labels` satisfy `sel` (an empty selector matches everything).
pub(crate) fn matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    sel.match_labels
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && sel.match_expressions.iter().all(|r| {
            let value = labels.get(&r.key);
            match r.operator {
                Operator::In => value.is_some_and(|v| r.values.contains(v)),
                Operator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
}

/// The node selector requirements that say the same as `sel`.
pub(crate) fn node_requirements(sel: &LabelSelector) -> Vec<NodeSelectorRequirement> {
    let mut out: Vec<NodeSelectorRequirement> = sel
        .match_labels
        .iter()
        .map(|(k, v)| NodeSelectorRequirement {
            key: k.clone(),
            operator: "In".into(),
            values: Some(vec![v.clone()]),
        })
        .collect();
    out.extend(
        sel.match_expressions
            .iter()
            .map(|r| NodeSelectorRequirement {
                key: r.key.clone(),
                operator: r.operator.as_str().into(),
                values: (!r.values.is_empty()).then(|| r.values.clone()),
            }),
    );
    out
}

/// The same selector as Kubernetes' type.
pub(crate) fn to_k8s(sel: &LabelSelector) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: (!sel.match_labels.is_empty()).then(|| sel.match_labels.clone()),
        match_expressions: (!sel.match_expressions.is_empty()).then(|| {
            sel.match_expressions
                .iter()
                .map(|r| meta::LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.as_str().into(),
                    values: (!r.values.is_empty()).then(|| r.values.clone()),
                })
                .collect()
        }),
    }
}

/// Parses kubectl's selector syntax: comma-separated `k=v`, `k==v`, `k!=v`,
/// `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
///
/// # Errors
/// A message naming the part that is not understood.
pub(crate) fn parse(s: &str) -> Result<LabelSelector, String> {
    let mut sel = LabelSelector::default();
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            format!(
                "{part:?} is not a selector requirement (k=v, k!=v, k, !k, k in (a,b), k notin (a,b))"
            )
        };
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(bad)?;
            let values: Vec<String> = inner
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            if values.is_empty() {
                return Err(bad());
            }
            Ok(values)
        };
        let req = |key: &str, operator, values| {
            let key = key.trim();
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad());
            }
            Ok(LabelSelectorRequirement {
                key: key.to_owned(),
                operator,
                values,
            })
        };
        if let Some((k, v)) = part.split_once("!=") {
            sel.match_expressions
                .push(req(k, Operator::NotIn, vec![v.trim().to_owned()])?);
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            let k = k.trim();
            if k.is_empty() {
                return Err(bad());
            }
            sel.match_labels.insert(k.to_owned(), v.trim().to_owned());
        } else if let Some(k) = part.strip_prefix('!') {
            sel.match_expressions
                .push(req(k, Operator::DoesNotExist, Vec::new())?);
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            sel.match_expressions
                .push(req(k, Operator::NotIn, set(rest)?)?);
        } else if let Some((k, rest)) = part.split_once(" in ") {
            sel.match_expressions
                .push(req(k, Operator::In, set(rest)?)?);
        } else {
            sel.match_expressions
                .push(req(part, Operator::Exists, Vec::new())?);
        }
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let sel = parse("app=web, tier in (1,2), !legacy, zone notin (z9), team").unwrap();
        assert!(matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "1"), ("team", "x")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "3"), ("team", "x")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "1"), ("team", "x"), ("legacy", "")])
        ));
        assert!(!matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "1"), ("team", "x"), ("zone", "z9")])
        ));
        assert!(!matches(&sel, &labels(&[("app", "web"), ("tier", "1")])));
        assert!(matches(&LabelSelector::default(), &labels(&[])));
        let ne = parse("type!=virtual-kubelet").unwrap();
        assert!(matches(&ne, &labels(&[])));
        assert!(!matches(&ne, &labels(&[("type", "virtual-kubelet")])));
    }

    #[test]
    fn bad_selectors_are_refused() {
        for s in ["=x", "a in ()", "a in x", "a b"] {
            assert!(parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn node_requirements_say_the_same() {
        let sel = parse("skylet.io/tier=1,type notin (kwok)").unwrap();
        let reqs = node_requirements(&sel);
        assert_eq!(reqs.len(), 2);
        assert_eq!(
            (
                reqs[0].key.as_str(),
                reqs[0].operator.as_str(),
                reqs[0].values.clone()
            ),
            ("skylet.io/tier", "In", Some(vec!["1".to_owned()]))
        );
        assert_eq!(
            (reqs[1].operator.as_str(), reqs[1].values.clone()),
            ("NotIn", Some(vec!["kwok".to_owned()]))
        );
        let k = to_k8s(&sel);
        assert_eq!(k.match_labels.unwrap()["skylet.io/tier"], "1");
        assert_eq!(k.match_expressions.unwrap()[0].operator, "NotIn");
    }
}
