//! Path normalization: the one place where a raw request target becomes the path every rule
//! matches. Done once per request, so that `/a/./b`, `/a//b` and `/a/%62` cannot reach a rule
//! that `/a/b` would not.

use std::fmt;

/// Why a path was refused. Each is answered with 400: guessing what an app server would make of
/// an ambiguous path is how gateway bypasses happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form target (`/…`).
    #[error("the request path must start with '/'")]
    NotOriginForm,
    /// `%2F`, `%5C` or `%00`: a separator or NUL hidden inside a segment.
    #[error("the path contains an encoded separator or NUL ({0})")]
    EncodedSeparator(&'static str),
    /// A raw backslash or control character, which some servers treat as a separator.
    #[error("the path contains a backslash or control character")]
    ForbiddenCharacter,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    /// A dot-segment with path parameters (`..;x`), which servlet containers resolve as `..`.
    #[error("the path contains a dot-segment with parameters")]
    DotSegmentWithParameters,
}

/// Splits a raw request target (`/a/b?x=1#f`) into path and query (without `?`); the fragment,
/// which clients should never send, is dropped.
pub fn split_target(target: &str) -> (&str, &str) {
    let target = target.split('#').next().unwrap_or_default();
    match target.split_once('?') {
        Some((path, query)) => (path, query),
        None => (target, ""),
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalizes a raw path (no query): decodes percent-encoded unreserved characters, upper-cases
/// the hex of the encodings it keeps, collapses `//`, resolves `.` and `..` (never above `/`).
/// Idempotent: normalizing a normalized path returns it unchanged.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let decoded = decode_unreserved(raw)?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/').skip(1) {
        let bare = segment.split(';').next().unwrap_or_default();
        if segment.contains(';') && (bare == "." || bare == "..") {
            return Err(PathError::DotSegmentWithParameters);
        }
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    // Keep a trailing slash: `/notebook/ns/` and `/notebook/ns` are different app routes.
    let ends_dir = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if out.is_empty() || (ends_dir && !segments.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(PathError::BadPercentEncoding)?;
            let hi = (hex[0] as char)
                .to_digit(16)
                .ok_or(PathError::BadPercentEncoding)?;
            let lo = (hex[1] as char)
                .to_digit(16)
                .ok_or(PathError::BadPercentEncoding)?;
            let value = (hi * 16 + lo) as u8;
            match value {
                b'/' => return Err(PathError::EncodedSeparator("%2F")),
                b'\\' => return Err(PathError::EncodedSeparator("%5C")),
                0 => return Err(PathError::EncodedSeparator("%00")),
                v if is_unreserved(v) => out.push(v as char),
                v => {
                    out.push('%');
                    out.push_str(&format!("{v:02X}"));
                }
            }
            i += 3;
        } else {
            if b == b'\\' || b.is_ascii_control() {
                return Err(PathError::ForbiddenCharacter);
            }
            // Non-ASCII bytes cannot occur here: the input is a &str and Envoy replaces invalid
            // UTF-8; multi-byte characters are copied through unchanged.
            let ch = raw[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    Ok(out)
}

/// A path prefix from the configuration, matched by whole segments: `/dex` and `/dex/` both
/// match `/dex` and `/dex/x`, never `/dexter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPrefix {
    /// Normalized, without trailing slash (`""` for the root).
    base: String,
}

impl PathPrefix {
    /// Parses and normalizes a configured prefix.
    pub fn parse(prefix: &str) -> Result<PathPrefix, String> {
        let normalized = normalize_path(prefix).map_err(|e| format!("{prefix:?}: {e}"))?;
        Ok(PathPrefix {
            base: normalized.trim_end_matches('/').to_string(),
        })
    }

    /// Whether a normalized path lies under this prefix.
    pub fn matches(&self, path: &str) -> bool {
        match path.strip_prefix(self.base.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_dots_slashes_and_unreserved_encodings() {
        let cases = [
            ("/", "/"),
            ("//", "/"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc", "/etc"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/%61%62c", "/abc"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/notebook/ns/", "/notebook/ns/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a;b/c", "/a;b/c"),
            ("/é", "/é"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
            assert_eq!(
                normalize_path(want).as_deref(),
                Ok(want),
                "idempotent {want}"
            );
        }
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for raw in [
            "/a%2Fb", "/a%2fb", "/a%5cb", "/a%00", "/a\\b", "/a%", "/a%zz", "/a%2", "/a/..;/b",
            "/a/.;x/b", "a/b", "", "/a\u{0}b", "/a\tb",
        ] {
            assert!(normalize_path(raw).is_err(), "{raw:?} must be refused");
        }
    }

    #[test]
    fn splits_query_and_drops_fragment() {
        assert_eq!(split_target("/a?b=1&c"), ("/a", "b=1&c"));
        assert_eq!(split_target("/a"), ("/a", ""));
        assert_eq!(split_target("/a#f?x"), ("/a", ""));
        assert_eq!(split_target("/a?x#f"), ("/a", "x"));
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let dex = PathPrefix::parse("/dex/").unwrap();
        assert!(dex.matches("/dex"));
        assert!(dex.matches("/dex/"));
        assert!(dex.matches("/dex/auth"));
        assert!(!dex.matches("/dexter"));
        assert!(!dex.matches("/"));
        let bare = PathPrefix::parse("/dex").unwrap();
        assert_eq!(bare, dex);
        assert!(PathPrefix::parse("/").unwrap().matches("/anything"));
        assert!(PathPrefix::parse("/a%2Fb").is_err());
    }
}
