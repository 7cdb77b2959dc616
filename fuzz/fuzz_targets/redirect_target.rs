//! `same_origin_target` on arbitrary return targets (after login, after logout).
//!
//! Input: the target as text, optionally prefixed by `<digit> ` to pick the public origin.
//!
//! Invariants of an accepted target: starts with `/` and not `//`; no backslash, whitespace or
//! control character; no `//`, `/./` or `/../` anywhere; resolved against the public origin it
//! stays on that origin with no user info; and it is accepted again unchanged (what goes into
//! `Location` is what was checked).
#![no_main]

use authgate::redirect::{safe_target, same_origin_target};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;
use url::Url;

static ORIGINS: LazyLock<Vec<Url>> = LazyLock::new(|| {
    [
        "https://kubeflow.example.com",
        "https://kubeflow.example.com:8443",
        "http://localhost:8080",
        "https://[::1]",
    ]
    .iter()
    .map(|o| Url::parse(o).unwrap())
    .collect()
});

fuzz_target!(|data: &[u8]| {
    // `<digit> <target>` picks one of the origins; anything else is a target for the first.
    let text = String::from_utf8_lossy(data);
    let (origin, target) = match text.as_bytes() {
        [d @ b'0'..=b'9', b' ', ..] => (usize::from(d - b'0') % ORIGINS.len(), &text[2..]),
        _ => (0, &text[..]),
    };
    let origin = &ORIGINS[origin];
    let target = target.to_string();
    let Some(out) = same_origin_target(&target, origin) else {
        assert_eq!(safe_target(&target, origin), "/");
        return;
    };
    assert!(
        out.starts_with('/') && !out.starts_with("//"),
        "{target:?} -> {out:?}"
    );
    assert!(
        !out.chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control()),
        "{target:?} -> {out:?}"
    );
    assert!(
        !out.contains("//") && !out.contains("/./") && !out.contains("/../"),
        "{target:?} -> {out:?}"
    );
    assert!(!out.contains('#'), "{target:?} -> {out:?}: fragment kept");
    let resolved = origin.join(&out).expect("joins");
    assert_eq!(
        resolved.origin(),
        origin.origin(),
        "{target:?} -> {out:?} leaves the origin"
    );
    assert!(resolved.username().is_empty() && resolved.password().is_none());
    assert_eq!(
        same_origin_target(&out, origin).as_deref(),
        Some(out.as_str()),
        "{target:?} -> {out:?} is not accepted again unchanged"
    );
    assert_eq!(safe_target(&target, origin), out);
});
