//! Every payload of the oauth2-proxy open-redirect corpus is refused as a return target
//! (see tests/data/README.md for where the list comes from).

use authgate::redirect::same_origin_target;
use url::Url;

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte.
fn query_unescape(line: &str) -> String {
    let spaced = line.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn payloads() -> Vec<String> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/openredirects.txt"
    ))
    .expect("tests/data/openredirects.txt");
    text.lines().map(query_unescape).collect()
}

#[test]
fn every_payload_is_refused() {
    let payloads = payloads();
    assert_eq!(payloads.len(), 559);
    for origin in [
        "https://kubeflow.example.com",
        "https://www.whitelisteddomain.tld",
    ] {
        let origin = Url::parse(origin).unwrap();
        let accepted: Vec<(&String, String)> = payloads
            .iter()
            .filter_map(|p| same_origin_target(p, &origin).map(|t| (p, t)))
            .collect();
        assert!(accepted.is_empty(), "accepted on {origin}: {accepted:#?}");
    }
}

#[test]
fn ordinary_targets_still_work() {
    let origin = Url::parse("https://www.whitelisteddomain.tld").unwrap();
    assert_eq!(
        same_origin_target("/notebook/ns/nb/lab?x=1", &origin).as_deref(),
        Some("/notebook/ns/nb/lab?x=1")
    );
    assert_eq!(
        same_origin_target("https://www.whitelisteddomain.tld/pipeline/", &origin).as_deref(),
        Some("/pipeline/")
    );
}
