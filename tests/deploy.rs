#![allow(clippy::unwrap_used)]
//! The deploy/ artifacts stay consistent: the Helm chart grants skylet
//! exactly the rules of deploy/manifests/rbac.yaml, which every end-to-end
//! test runs skylet under (so a missing rule fails a test).

use skylet_testenv::repo_root;

fn rules_of(yaml: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml).unwrap()
}

#[test]
fn helm_chart_grants_the_tested_rbac_rules() {
    let manifest = std::fs::read_to_string(repo_root().join("deploy/manifests/rbac.yaml")).unwrap();
    let tested = rules_of(&manifest)["rules"].clone();
    let template =
        std::fs::read_to_string(repo_root().join("deploy/helm/skylet/templates/rbac.yaml"))
            .unwrap();
    // the rules block of the template is plain YAML (no template actions)
    let start = template.find("rules:\n").unwrap();
    let end = start + template[start..].find("---").unwrap();
    let chart = rules_of(&template[start..end])["rules"].clone();
    assert_eq!(
        chart, tested,
        "deploy/helm/skylet/templates/rbac.yaml and deploy/manifests/rbac.yaml disagree"
    );
}
