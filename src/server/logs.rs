//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's log from the
//! backend, streamed as it arrives, with the kubelet's options: `follow`,
//! `previous`, `timestamps`, `tailLines`, `sinceSeconds`, `sinceTime`,
//! `limitBytes`. `previous` from a backend that keeps no log of a previous
//! run is a 400 naming why ([`previous_error`]).

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::Body,
    extract::{Path, Query, State as AxState},
    http::header,
    response::{IntoResponse, Response},
};
use skylet_provider::{LogOptions, PodRef, Provider, ProviderError};

use super::{State, error::ApiError};
use crate::metrics::timed;

/// Parses the kubelet's log query; 400 with the parameter's name when malformed.
pub(crate) fn parse_options(q: &HashMap<String, String>) -> Result<LogOptions, ApiError> {
    let flag = |name: &str| -> Result<bool, ApiError> {
        match q.get(name).map(String::as_str) {
            None | Some("" | "false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "{name}={v:?} is not a boolean"
            ))),
        }
    };
    let number = |name: &str| -> Result<Option<i64>, ApiError> {
        q.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("{name}={v:?} is not an integer")))
            })
            .transpose()
    };
    let positive = |name: &str, v: Option<i64>, min: i64| -> Result<Option<u64>, ApiError> {
        match v {
            Some(n) if n < min => Err(ApiError::bad_request(format!(
                "{name} must be at least {min}, got {n}"
            ))),
            Some(n) => Ok(u64::try_from(n).ok()),
            None => Ok(None),
        }
    };
    let tail_lines = positive("tailLines", number("tailLines")?, 0)?;
    let since_seconds = positive("sinceSeconds", number("sinceSeconds")?, 1)?;
    let limit_bytes = positive("limitBytes", number("limitBytes")?, 1)?;
    let since_time = q
        .get("sinceTime")
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map_err(|e| ApiError::bad_request(format!("sinceTime={v:?} is not RFC 3339: {e}")))
        })
        .transpose()?;
    if since_seconds.is_some() && since_time.is_some() {
        return Err(ApiError::bad_request(
            "at most one of sinceTime or sinceSeconds may be specified",
        ));
    }
    let since = match (since_seconds, since_time) {
        (Some(s), _) => jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(
                i64::try_from(s).unwrap_or(i64::MAX),
            ))
            .ok(),
        (None, t) => t,
    };
    Ok(LogOptions {
        follow: flag("follow")?,
        previous: flag("previous")?,
        timestamps: flag("timestamps")?,
        tail_lines,
        since,
        limit_bytes,
    })
}

pub(crate) async fn logs<P: Provider>(
    AxState(state): AxState<Arc<State<P>>>,
    Path((ns, name, container)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let opts = parse_options(&q)?;
    let pod = state
        .pod(&ns, &name)
        .ok_or_else(|| ApiError::not_found(format!("pod {ns}/{name} is not on this node")))?;
    let spec = pod.spec.as_ref();
    let known = spec.is_some_and(|s| {
        let ephemeral = s.ephemeral_containers.iter().flatten().map(|c| &c.name);
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .map(|c| &c.name)
            .chain(ephemeral)
            .any(|n| *n == container)
    });
    if !known {
        return Err(ApiError::not_found(format!(
            "container {container:?} is not in pod {ns}/{name}"
        )));
    }
    let r = PodRef::of(&pod);
    let previous = opts.previous;
    let stream = timed(
        &state.metrics,
        "logs",
        state.provider.logs(&r, &container, opts),
    )
    .await
    .map_err(|e| previous_error(previous, e))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `--previous` from a backend that keeps no log of a container's previous
/// run (`Unsupported`): 400 with the backend's reason, as the kubelet answers
/// for a container without a previous instance, never the current log.
fn previous_error(previous: bool, e: ProviderError) -> ApiError {
    match e {
        ProviderError::Unsupported(why) if previous => ApiError::bad_request(why),
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn options_parse_like_the_kubelets() {
        let o = parse_options(&q(&[
            ("follow", "true"),
            ("tailLines", "5"),
            ("timestamps", "1"),
            ("limitBytes", "100"),
        ]))
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(5), Some(100)));
        let o = parse_options(&q(&[("sinceTime", "2026-01-02T03:04:05Z")])).unwrap();
        assert_eq!(o.since.unwrap().to_string(), "2026-01-02T03:04:05Z");
        assert!(
            parse_options(&q(&[("sinceSeconds", "10")]))
                .unwrap()
                .since
                .is_some()
        );
    }

    #[test]
    fn previous_without_a_kept_log_is_400_not_501() {
        let why = || ProviderError::Unsupported("no log of a previous run is kept".into());
        let e = previous_error(true, why());
        assert_eq!(e.status().as_u16(), 400);
        assert!(format!("{e:?}").contains("previous run"), "{e:?}");
        assert_eq!(previous_error(false, why()).status().as_u16(), 501);
        let gone = ProviderError::NotFound("no such pod".into());
        assert_eq!(previous_error(true, gone).status().as_u16(), 404);
    }

    #[test]
    fn malformed_options_are_400_naming_the_parameter() {
        for (k, v) in [
            ("tailLines", "x"),
            ("tailLines", "-1"),
            ("sinceSeconds", "0"),
            ("sinceTime", "yesterday"),
            ("follow", "maybe"),
            ("limitBytes", "0"),
        ] {
            let e = parse_options(&q(&[(k, v)])).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{k}={v}");
            assert!(format!("{e:?}").contains(k), "{k}: {e:?}");
        }
        assert!(
            parse_options(&q(&[
                ("sinceTime", "2026-01-02T03:04:05Z"),
                ("sinceSeconds", "5")
            ]))
            .is_err()
        );
    }
}
