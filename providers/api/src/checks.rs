//! Checks of a pod spec that mean the same on every backend that runs pods
//! in a cloud sandbox.

use k8s_openapi::api::core::v1::PodSpec;

use crate::ProviderError;

/// The reason of every [`ProviderError::InvalidPod`] about a field the
/// backend cannot honour.
pub const UNSUPPORTED_POD_SPEC: &str = "UnsupportedPodSpec";

/// A [`ProviderError::InvalidPod`] with reason [`UNSUPPORTED_POD_SPEC`].
pub fn unsupported(message: impl Into<String>) -> ProviderError {
    ProviderError::invalid(UNSUPPORTED_POD_SPEC, message)
}

/// Refuses `hostNetwork`, `hostPID` and `hostIPC`: a pod in a cloud
/// sandbox has no host to share. `sandbox` names what runs the pod, for
/// the message ("Fargate tasks", "ACI container groups").
///
/// # Errors
/// [`UNSUPPORTED_POD_SPEC`], naming the first such field and saying to
/// remove it.
pub fn refuse_host_namespaces(spec: &PodSpec, sandbox: &str) -> Result<(), ProviderError> {
    for (set, field) in [
        (spec.host_network, "spec.hostNetwork"),
        (spec.host_pid, "spec.hostPID"),
        (spec.host_ipc, "spec.hostIPC"),
    ] {
        if set == Some(true) {
            return Err(unsupported(format!(
                "{field}: {sandbox} have no host to share; remove it"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_namespaces_are_named_in_the_refusal() {
        assert!(refuse_host_namespaces(&PodSpec::default(), "Fargate tasks").is_ok());
        let spec = PodSpec {
            host_pid: Some(true),
            ..Default::default()
        };
        let e = refuse_host_namespaces(&spec, "Fargate tasks").unwrap_err();
        assert!(
            matches!(&e, ProviderError::InvalidPod { reason, .. } if reason == UNSUPPORTED_POD_SPEC)
        );
        assert_eq!(
            e.to_string(),
            "spec.hostPID: Fargate tasks have no host to share; remove it"
        );
    }
}
