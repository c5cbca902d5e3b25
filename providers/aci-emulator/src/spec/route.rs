//! Routing: a request's method and path to the operation whose path
//! template matches.

use std::collections::HashMap;

use http::Method;

use super::{Operation, Route, Spec};

/// A segment of a path template.
#[derive(Clone, Debug)]
pub(super) enum Segment {
    Literal(String),
    Param(String),
}

impl Spec {
    /// Routes `method path` to its operation. Literal segments match
    /// case-insensitively (as ARM does); the most literal match wins.
    pub fn route(&self, method: &Method, path: &str) -> Route<'_> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(usize, &Operation, HashMap<String, String>)> = None;
        let mut path_matched = false;
        for op in &self.operations {
            if op.template.len() != segments.len() {
                continue;
            }
            let mut literals = 0;
            let mut params = HashMap::new();
            let matched = op.template.iter().zip(&segments).all(|(t, s)| match t {
                Segment::Literal(l) => {
                    literals += 1;
                    l.eq_ignore_ascii_case(s)
                }
                Segment::Param(name) => {
                    params.insert(name.clone(), (*s).to_owned());
                    true
                }
            });
            if !matched {
                continue;
            }
            path_matched = true;
            if op.method != method {
                continue;
            }
            if best.as_ref().is_none_or(|(l, _, _)| literals > *l) {
                best = Some((literals, op, params));
            }
        }
        match best {
            Some((_, op, params)) => Route::Found(op, params),
            None if path_matched => Route::MethodNotAllowed,
            None => Route::NotFound,
        }
    }
}
