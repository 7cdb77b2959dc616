//! The alert rules and the dashboard only use metrics a running authgate really exports.

use std::collections::BTreeSet;

use crate::support::*;

/// Metric family names (`authgate_…`) mentioned in a text, with histogram/counter suffixes of
/// the exposition (`_bucket`, `_count`, `_sum`) kept as written.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("authgate_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

#[tokio::test]
async fn rules_and_dashboard_use_only_exported_metrics() {
    let fixture = Fixture {
        tokens: vec![sa_token("t", "ns", "sa", &[KFP_AUDIENCE])],
        rbac: Rbac { bindings: vec![] },
    };
    let stack = Stack::start(ExtAuthz::Grpc, fixture, "").await;
    // Exercise every family once so all appear in the exposition.
    stack.get("/api/x", &["Authorization: Bearer t"]).await;
    stack.get("/api/x", &[]).await;
    let exposition = stack.authgate.metrics().await;
    let exported = referenced(&exposition);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/istio/monitoring/");
    for file in ["prometheus-rules.yaml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{dir}{file}")).unwrap();
        let used = referenced(&text);
        assert!(!used.is_empty(), "{file} uses no authgate metric");
        for name in used {
            assert!(
                exported.contains(&name),
                "{file} uses {name}, which authgate does not export:\n{exposition}"
            );
        }
    }
    serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(format!("{dir}grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    serde_yaml::from_str::<serde_yaml::Value>(
        &std::fs::read_to_string(format!("{dir}prometheus-rules.yaml")).unwrap(),
    )
    .expect("the rules are YAML");
}
