//! `split_target` + `normalize_path` on arbitrary request targets.
//!
//! Invariants of an accepted path: starts with `/`; no `//`; no `.` or `..` segment (not even
//! with `;params`); no `%2F`, `%5C` or `%00` in any case; every `%` starts an upper-case
//! `%XX`; normalizing it again returns it unchanged. `PathPrefix::matches` agrees with itself
//! on the normalized form.
#![no_main]

use authgate::path::{PathPrefix, normalize_path, split_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Envoy hands over UTF-8 (invalid bytes replaced), so the lossy form is what arrives.
    let target = String::from_utf8_lossy(data);
    let (path, query) = split_target(&target);
    assert!(!path.contains('?') && !path.contains('#'), "{target:?}");
    assert!(!query.contains('#'), "{target:?}");
    assert!(target.starts_with(path), "{target:?}");

    let Ok(normalized) = normalize_path(path) else {
        return;
    };
    check_normalized(path, &normalized);

    let again = normalize_path(&normalized)
        .unwrap_or_else(|e| panic!("{path:?} -> {normalized:?} refused on renormalization: {e}"));
    assert_eq!(again, normalized, "not idempotent for {path:?}");

    // A prefix built from the path matches the path itself, whole segments only.
    if let Ok(prefix) = PathPrefix::parse(&normalized) {
        assert!(prefix.matches(&normalized), "{normalized:?}");
        assert!(prefix.matches(normalized.trim_end_matches('/')) || normalized == "/");
    }
});

fn check_normalized(raw: &str, out: &str) {
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(!out.contains("//"), "{raw:?} -> {out:?}");
    for segment in out.split('/') {
        let bare = segment.split(';').next().unwrap_or_default();
        assert!(
            bare != "." && bare != "..",
            "{raw:?} -> {out:?}: dot segment"
        );
    }
    let upper = out.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(bad), "{raw:?} -> {out:?}: {bad}");
    }
    assert!(!out.contains('\\'), "{raw:?} -> {out:?}");
    assert!(
        !out.bytes().any(|b| b.is_ascii_control()),
        "{raw:?} -> {out:?}"
    );
    // Every remaining `%` is a canonical upper-case escape of a reserved/other byte.
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter()
                    .all(|h| h.is_ascii_digit() || (b'A'..=b'F').contains(h)),
                "{raw:?} -> {out:?}: bad escape at {i}"
            );
            let v = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
            assert!(
                !(v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~')),
                "{raw:?} -> {out:?}: unreserved byte left encoded"
            );
        }
    }
}
