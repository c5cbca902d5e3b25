//! The group's network: IP address, subnets and DNS.
//!
//! The subnets are annotation [`ANNOTATION_SUBNET_IDS`] or
//! [`Settings::subnet_ids`]. With subnets the group is private (in those
//! subnets, an IP address with the pods' ports if any); without, a group
//! with ports gets a public address (DNS label from
//! [`ANNOTATION_DNS_NAME_LABEL`]) and one without ports none.
//! [`ANNOTATION_IP`] (`public|private|none`) overrides the choice. The
//! address's ports are the union of the containers' ports. DNS:
//! [`Settings::dns`] for dnsPolicy ClusterFirst (with kubelet-style search
//! domains under [`Settings::cluster_domain`]), none (Azure's resolver) for
//! `Default`, and the pod's own `dnsConfig` appended (or alone, with
//! dnsPolicy `None`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodSpec;
use skylet_provider::ProviderError;

use super::{
    ANNOTATION_DNS_NAME_LABEL, ANNOTATION_IP, ANNOTATION_SUBNET_IDS, Settings, bad_annotation,
    invalid,
};
use crate::{
    models::{
        Container, ContainerGroupIpAddressType, ContainerGroupNetworkProtocol,
        ContainerGroupSubnetId, ContainerNetworkProtocol, DnsConfiguration, IpAddress, Port,
    },
    names,
};

/// The group's ports: the union of the containers'.
pub(super) fn group_ports(containers: &[Container]) -> Vec<Port> {
    let mut ports: Vec<Port> = Vec::new();
    for c in containers {
        for p in &c.properties.ports {
            let protocol = Some(match p.protocol {
                Some(ContainerNetworkProtocol::Udp) => ContainerGroupNetworkProtocol::Udp,
                _ => ContainerGroupNetworkProtocol::Tcp,
            });
            let port = Port {
                protocol,
                port: p.port,
            };
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
    }
    ports
}

/// How the group is addressed ([`ANNOTATION_IP`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpMode {
    /// A public address.
    Public,
    /// In subnets, with a private address when it has ports.
    Private,
    /// No address.
    None,
}

/// The group's IP address and subnets.
pub(super) fn network(
    ann: &BTreeMap<String, String>,
    s: &Settings,
    ports: Vec<Port>,
) -> Result<(Option<IpAddress>, Vec<ContainerGroupSubnetId>), ProviderError> {
    let from_annotation = annotated_subnets(ann)?;
    let subnets = from_annotation
        .clone()
        .unwrap_or_else(|| s.subnet_ids.clone());
    let mode = ip_mode(ann, &subnets, &ports)?;
    let label = dns_name_label(ann, mode)?;
    match mode {
        IpMode::Private => private(subnets, ports),
        IpMode::Public => public(from_annotation.as_deref(), label, ports),
        IpMode::None => Ok((None, Vec::new())),
    }
}

/// The subnets of annotation [`ANNOTATION_SUBNET_IDS`], if set.
fn annotated_subnets(ann: &BTreeMap<String, String>) -> Result<Option<Vec<String>>, ProviderError> {
    let from_annotation = ann.get(ANNOTATION_SUBNET_IDS).map(|v| {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    if let Some(bad) = from_annotation
        .iter()
        .flatten()
        .find(|id| !id.to_ascii_lowercase().contains("/subnets/"))
    {
        return Err(bad_annotation(
            ANNOTATION_SUBNET_IDS,
            bad,
            "give subnet resource ids (/subscriptions/.../virtualNetworks/VNET/subnets/SUBNET)",
        ));
    }
    Ok(from_annotation)
}

/// The annotated mode, else private with subnets, public with ports, else
/// none.
fn ip_mode(
    ann: &BTreeMap<String, String>,
    subnets: &[String],
    ports: &[Port],
) -> Result<IpMode, ProviderError> {
    match ann.get(ANNOTATION_IP) {
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "public" => Ok(IpMode::Public),
            "private" => Ok(IpMode::Private),
            "none" => Ok(IpMode::None),
            _ => Err(bad_annotation(
                ANNOTATION_IP,
                v,
                "use public, private or none",
            )),
        },
        None if !subnets.is_empty() => Ok(IpMode::Private),
        None if !ports.is_empty() => Ok(IpMode::Public),
        None => Ok(IpMode::None),
    }
}

/// The DNS name label of annotation [`ANNOTATION_DNS_NAME_LABEL`]: only for
/// a public group.
fn dns_name_label(
    ann: &BTreeMap<String, String>,
    mode: IpMode,
) -> Result<Option<String>, ProviderError> {
    let label = ann
        .get(ANNOTATION_DNS_NAME_LABEL)
        .map(|l| l.trim().to_owned());
    if label.is_some() && mode != IpMode::Public {
        return Err(invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_DNS_NAME_LABEL}]: only a public group has a DNS name label; set {ANNOTATION_IP}: public"
            ),
        ));
    }
    if let Some(l) = label
        .as_deref()
        .filter(|l| !names::is_valid_name(l) || l.len() < 5)
    {
        return Err(bad_annotation(
            ANNOTATION_DNS_NAME_LABEL,
            l,
            "use 5-63 lowercase letters, digits and '-'",
        ));
    }
    Ok(label)
}

/// A private group: in `subnets`, with an address when it has ports.
fn private(
    subnets: Vec<String>,
    ports: Vec<Port>,
) -> Result<(Option<IpAddress>, Vec<ContainerGroupSubnetId>), ProviderError> {
    if subnets.is_empty() {
        return Err(invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_IP}]: a private group needs subnets; set {ANNOTATION_SUBNET_IDS} (or the node's subnet ids)"
            ),
        ));
    }
    let ip = (!ports.is_empty()).then_some(IpAddress {
        ports,
        type_: ContainerGroupIpAddressType::Private,
        ip: None,
        dns_name_label: None,
        auto_generated_domain_name_label_scope: None,
        fqdn: None,
    });
    let subnet_ids = subnets
        .into_iter()
        .map(|id| ContainerGroupSubnetId { id, name: None })
        .collect();
    Ok((ip, subnet_ids))
}

/// A public group: an address with `ports` (at least one), in no subnet.
fn public(
    annotated_subnets: Option<&[String]>,
    label: Option<String>,
    ports: Vec<Port>,
) -> Result<(Option<IpAddress>, Vec<ContainerGroupSubnetId>), ProviderError> {
    if annotated_subnets.is_some_and(|s| !s.is_empty()) {
        return Err(invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_SUBNET_IDS}]: a public group is in no subnet; remove it or set {ANNOTATION_IP}: private"
            ),
        ));
    }
    if ports.is_empty() {
        return Err(invalid(
            "InvalidAnnotation",
            format!(
                "metadata.annotations[{ANNOTATION_IP}]: a public address needs at least one container port; declare the ports to expose"
            ),
        ));
    }
    let ip = IpAddress {
        ports,
        type_: ContainerGroupIpAddressType::Public,
        ip: None,
        dns_name_label: label,
        auto_generated_domain_name_label_scope: None,
        fqdn: None,
    };
    Ok((Some(ip), Vec::new()))
}

pub(super) fn dns_config(
    spec: &PodSpec,
    s: &Settings,
    namespace: &str,
) -> Option<DnsConfiguration> {
    let mut servers = Vec::new();
    let mut searches = Vec::new();
    let mut options = Vec::new();
    match spec.dns_policy.as_deref() {
        // the pod's dnsConfig alone; Default: Azure's resolver
        Some("None" | "Default") => {}
        _ => {
            if let Some(d) = &s.dns {
                servers.extend(d.nameservers.iter().cloned());
                if let Some(cd) = s.cluster_domain.as_deref().filter(|c| !c.is_empty()) {
                    searches.extend([
                        format!("{namespace}.svc.{cd}"),
                        format!("svc.{cd}"),
                        cd.to_owned(),
                    ]);
                }
                searches.extend(d.search_domains.iter().cloned());
                options.extend(
                    d.options
                        .iter()
                        .flat_map(|o| o.split_whitespace().map(str::to_owned)),
                );
            }
        }
    }
    if let Some(d) = &spec.dns_config {
        servers.extend(d.nameservers.iter().flatten().cloned());
        searches.extend(d.searches.iter().flatten().cloned());
        for o in d.options.iter().flatten() {
            let Some(name) = o.name.as_deref() else {
                continue;
            };
            // a pod option replaces the node's option of the same name
            options.retain(|x| x.split(':').next() != Some(name));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_owned(),
            });
        }
    }
    let dedup = |v: &mut Vec<String>| {
        let mut seen = BTreeSet::new();
        v.retain(|x| seen.insert(x.clone()));
    };
    dedup(&mut servers);
    dedup(&mut searches);
    (!servers.is_empty()).then(|| DnsConfiguration {
        name_servers: servers,
        search_domains: (!searches.is_empty()).then(|| searches.join(" ")),
        options: (!options.is_empty()).then(|| options.join(" ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::super::{
        Dns, container_group,
        fixtures::{pod, pod_with, refusal, settings},
    };

    #[test]
    fn network_modes() {
        let ports =
            json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 80}]}]});
        let none = json!({"containers": [{"name": "a", "image": "i"}]});
        let subnet = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/aci";
        let mut s = settings();
        // no ports, no subnets: no address
        let g = container_group(&pod(none.clone()), &s).unwrap();
        assert_eq!(
            (
                g.properties.ip_address.clone(),
                g.properties.subnet_ids.len()
            ),
            (None, 0)
        );
        // public with a DNS label
        let g = container_group(
            &pod_with(
                "p",
                json!({ANNOTATION_DNS_NAME_LABEL: "my-web"}),
                ports.clone(),
            ),
            &s,
        )
        .unwrap();
        let ip = g.properties.ip_address.unwrap();
        assert_eq!(
            (ip.type_, ip.dns_name_label.as_deref()),
            (ContainerGroupIpAddressType::Public, Some("my-web"))
        );
        // subnets from the settings: private
        s.subnet_ids = vec![subnet.into()];
        let g = container_group(&pod(ports.clone()), &s).unwrap();
        assert_eq!(
            g.properties.ip_address.as_ref().unwrap().type_,
            ContainerGroupIpAddressType::Private
        );
        assert_eq!(g.properties.subnet_ids[0].id, subnet);
        let g = container_group(&pod(none.clone()), &s).unwrap();
        assert_eq!(
            (
                g.properties.ip_address.is_none(),
                g.properties.subnet_ids.len()
            ),
            (true, 1),
            "in the subnet without ports"
        );
        // the annotation overrides
        let g = container_group(
            &pod_with("p", json!({ANNOTATION_IP: "none"}), ports.clone()),
            &s,
        )
        .unwrap();
        assert!(g.properties.ip_address.is_none() && g.properties.subnet_ids.is_empty());
        let g = container_group(
            &pod_with("p", json!({ANNOTATION_IP: "Public"}), ports.clone()),
            &s,
        )
        .unwrap();
        assert_eq!(
            g.properties.ip_address.unwrap().type_,
            ContainerGroupIpAddressType::Public
        );
        let other = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/other";
        let g = container_group(
            &pod_with(
                "p",
                json!({ANNOTATION_SUBNET_IDS: format!("{other}, ")}),
                ports.clone(),
            ),
            &settings(),
        )
        .unwrap();
        assert_eq!(g.properties.subnet_ids[0].id, other);
        // contradictions
        for (ann, spec, needle) in [
            (
                json!({ANNOTATION_IP: "private"}),
                ports.clone(),
                "needs subnets",
            ),
            (
                json!({ANNOTATION_IP: "public"}),
                none.clone(),
                "at least one container port",
            ),
            (
                json!({ANNOTATION_IP: "internal"}),
                ports.clone(),
                ANNOTATION_IP,
            ),
            (
                json!({ANNOTATION_IP: "none", ANNOTATION_DNS_NAME_LABEL: "abcde"}),
                ports.clone(),
                ANNOTATION_DNS_NAME_LABEL,
            ),
            (
                json!({ANNOTATION_DNS_NAME_LABEL: "Bad_Label"}),
                ports.clone(),
                ANNOTATION_DNS_NAME_LABEL,
            ),
            (
                json!({ANNOTATION_SUBNET_IDS: "subnet-1"}),
                ports.clone(),
                ANNOTATION_SUBNET_IDS,
            ),
            (
                json!({ANNOTATION_SUBNET_IDS: subnet, ANNOTATION_IP: "public"}),
                ports.clone(),
                "a public group is in no subnet",
            ),
        ] {
            let (reason, message) =
                refusal(container_group(&pod_with("p", ann, spec), &settings()));
            assert_eq!(reason, "InvalidAnnotation");
            assert!(message.contains(needle), "{needle} not in {message}");
        }
    }

    /// Issue #17: a group in a subnet of the cluster's VNet gets the cluster
    /// DNS (the kube-dns Service address, reachable from that subnet) and
    /// the kubelet's search path, so `svc`, `svc.ns` and
    /// `svc.ns.svc.cluster.local` resolve as from a pod of the cluster.
    #[test]
    fn a_group_in_the_cluster_vnet_resolves_through_the_cluster_dns() {
        let subnet = "/subscriptions/s/resourceGroups/aks-nodes/providers/Microsoft.Network/virtualNetworks/aks-vnet/subnets/aci";
        let mut s = settings();
        s.subnet_ids = vec![subnet.into()];
        s.dns = Some(Dns {
            nameservers: vec!["10.0.0.10".into()],
            search_domains: vec![],
            options: Some("ndots:5".into()),
        });
        s.cluster_domain = Some("cluster.local".into());
        for policy in [None, Some("ClusterFirst"), Some("ClusterFirstWithHostNet")] {
            let mut spec = json!({"containers": [{"name": "a", "image": "i", "ports": [{"containerPort": 8080}]}]});
            if let Some(p) = policy {
                spec["dnsPolicy"] = json!(p);
            }
            let g = container_group(&pod(spec), &s).unwrap();
            let ip = g.properties.ip_address.as_ref().unwrap();
            assert_eq!(
                ip.type_,
                ContainerGroupIpAddressType::Private,
                "{policy:?}: in the VNet"
            );
            assert_eq!(g.properties.subnet_ids[0].id, subnet);
            let d = g.properties.dns_config.unwrap();
            assert_eq!(d.name_servers, ["10.0.0.10"], "{policy:?}: the cluster DNS");
            assert_eq!(
                d.search_domains.as_deref(),
                Some("shop.svc.cluster.local svc.cluster.local cluster.local"),
                "{policy:?}: the pod's namespace first, as the kubelet writes it"
            );
            assert_eq!(d.options.as_deref(), Some("ndots:5"));
        }
        // a group placed in another subnet by annotation keeps the cluster DNS:
        // reaching it is then up to the network (peering)
        let other = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/peered/subnets/x";
        let g = container_group(
            &pod_with(
                "p",
                json!({ANNOTATION_SUBNET_IDS: other}),
                json!({"containers": [{"name": "a", "image": "i"}]}),
            ),
            &s,
        )
        .unwrap();
        assert_eq!(g.properties.subnet_ids[0].id, other);
        assert_eq!(g.properties.dns_config.unwrap().name_servers, ["10.0.0.10"]);
    }

    #[test]
    fn dns_follows_the_dns_policy() {
        let mut s = settings();
        s.dns = Some(Dns {
            nameservers: vec!["10.0.0.10".into()],
            search_domains: vec!["corp.example".into()],
            options: Some("ndots:5".into()),
        });
        s.cluster_domain = Some("cluster.local".into());
        let base = json!({"containers": [{"name": "a", "image": "i"}]});
        let d = container_group(&pod(base.clone()), &s)
            .unwrap()
            .properties
            .dns_config
            .unwrap();
        assert_eq!(d.name_servers, ["10.0.0.10"]);
        assert_eq!(
            d.search_domains.as_deref(),
            Some("shop.svc.cluster.local svc.cluster.local cluster.local corp.example")
        );
        assert_eq!(d.options.as_deref(), Some("ndots:5"));
        let mut spec = base.clone();
        spec["dnsPolicy"] = json!("Default");
        assert_eq!(
            container_group(&pod(spec.clone()), &s)
                .unwrap()
                .properties
                .dns_config,
            None,
            "Default: Azure's resolver"
        );
        spec["dnsPolicy"] = json!("None");
        spec["dnsConfig"] = json!({"nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]});
        let d = container_group(&pod(spec.clone()), &s)
            .unwrap()
            .properties
            .dns_config
            .unwrap();
        assert_eq!(
            (
                d.name_servers.as_slice(),
                d.search_domains.as_deref(),
                d.options.as_deref()
            ),
            (
                &["1.1.1.1".to_owned()][..],
                Some("a.example"),
                Some("ndots:2 edns0")
            )
        );
        spec["dnsPolicy"] = json!("ClusterFirst");
        let d = container_group(&pod(spec), &s)
            .unwrap()
            .properties
            .dns_config
            .unwrap();
        assert_eq!(
            d.name_servers,
            ["10.0.0.10", "1.1.1.1"],
            "the pod's config is appended"
        );
        assert_eq!(
            d.options.as_deref(),
            Some("ndots:2 edns0"),
            "a pod option replaces the node's"
        );
        assert_eq!(
            container_group(&pod(base), &settings())
                .unwrap()
                .properties
                .dns_config,
            None,
            "no DNS settings: none"
        );
    }
}
