//! `split_target`, `normalize_path` and `checked_path` on arbitrary request targets.
//!
//! Invariants of the normal form: starts with `/`; no `.` or `..` segment (not even with
//! `;params`); no `%2F`, `%5C` or `%00` in any case; every `%` starts an escape of a byte that
//! is not unreserved; no byte a normalizing mesh escapes, no control or non-ASCII byte;
//! normalizing it again returns it unchanged. A request path is accepted exactly when it is its
//! own normal form with no empty segment but the last; refused as not normal, it names its
//! normal form. `PathPrefix::matches` agrees with itself.
#![no_main]

use authgate::path::{PathError, PathPrefix, checked_path, normalize_path, split_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Envoy hands over UTF-8 (invalid bytes replaced), so the lossy form is what arrives.
    let target = String::from_utf8_lossy(data);
    let (path, query) = split_target(&target);
    assert!(!path.contains('?') && !path.contains('#'), "{target:?}");
    assert!(!query.contains('#'), "{target:?}");
    assert!(target.starts_with(path), "{target:?}");

    let normalized = normalize_path(path);
    match checked_path(path) {
        Ok(accepted) => {
            assert_eq!(accepted, path);
            assert_eq!(
                normalized.as_deref(),
                Ok(path),
                "accepted but not normal: {path:?}"
            );
            let segments: Vec<&str> = path[1..].split('/').collect();
            assert!(
                segments[..segments.len() - 1].iter().all(|s| !s.is_empty()),
                "accepted with an empty segment: {path:?}"
            );
        }
        Err(PathError::NotNormal { normal }) => {
            assert_eq!(normalized.as_ref(), Ok(&normal), "{path:?}");
            assert_ne!(normal, path);
        }
        Err(PathError::EmptySegment) => assert_eq!(normalized.as_deref(), Ok(path)),
        Err(_) => assert!(normalized.is_err(), "{path:?}"),
    }

    let Ok(normalized) = normalized else {
        return;
    };
    check_normalized(path, &normalized);
    let again = normalize_path(&normalized)
        .unwrap_or_else(|e| panic!("{path:?} -> {normalized:?} refused on renormalization: {e}"));
    assert_eq!(again, normalized, "not idempotent for {path:?}");

    // A prefix built from an accepted path matches the path itself, whole segments only.
    if let Ok(prefix) = PathPrefix::parse(&normalized) {
        assert!(prefix.matches(&normalized), "{normalized:?}");
        assert!(prefix.matches(normalized.trim_end_matches('/')) || normalized == "/");
    }
});

fn check_normalized(raw: &str, out: &str) {
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
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
    assert!(
        out.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\\\"<>^`{|}".contains(&b)),
        "{raw:?} -> {out:?}: a byte a normalizing mesh would not send"
    );
    let bytes = out.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%' {
            let hex = &bytes[i + 1..i + 3];
            assert!(
                hex.iter().all(u8::is_ascii_hexdigit),
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
