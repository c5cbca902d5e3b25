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

/// Every values file in the chart's examples gives skylet a config file it
/// accepts (known keys, valid values), as the chart renders it (#18).
#[test]
fn the_charts_example_configs_are_valid_skylet_configs() {
    let chart = repo_root().join("deploy/helm/skylet");
    let defaults: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(chart.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let values: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // helm merges the example's config over the chart's
        let mut config = defaults["config"].as_mapping().cloned().unwrap_or_default();
        if let Some(m) = values["config"].as_mapping() {
            config.extend(m.clone());
        }
        let fleet = config.contains_key("backends");
        // the Secrets the chart mounts at /etc/skylet/secrets/: files here
        let secrets = dir.path().join("secrets");
        let text = serde_yaml_ng::to_string(&config)
            .unwrap()
            .replace("/etc/skylet/secrets/", &format!("{}/", secrets.display()));
        for word in text.split(|c: char| c.is_whitespace() || c == '"' || c == ',') {
            if word.starts_with(secrets.to_str().unwrap()) {
                std::fs::create_dir_all(std::path::Path::new(word).parent().unwrap()).unwrap();
                std::fs::write(word, "secret").unwrap();
            }
        }
        let file = dir.path().join("skylet.yaml");
        std::fs::write(&file, text).unwrap();
        let mut args = vec!["skylet", "--config", file.to_str().unwrap()];
        if !fleet {
            // the chart passes --node-name only without backends:
            args.extend(["--node-name", "example"]);
        }
        if let Err(e) = skylet::Config::parse_from(args) {
            panic!("{}: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 3, "examples found: {seen}");
}
