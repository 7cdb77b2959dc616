//! The path a request is judged on. authgate judges the path exactly as the app behind receives
//! it, so it only accepts a path that is already in the normal form a normalizing mesh sends
//! (Envoy's `normalize_path`, Istio's default `pathNormalization: BASE`). A path in any other
//! form means the mesh in front does not normalize, and the app could read it differently
//! (resolve its dot-segments, decode its escapes): it is refused with 400, never normalized here
//! and judged as a path the app will not see.
//!
//! The normal form, as Envoy 1.40 produces it (checked against a real Envoy in
//! `tests/suite/app_readings.rs`): percent-encoded unreserved characters decoded (`%61` → `a`,
//! any hex case), other escapes kept as sent (hex case too), the characters `"<>^`{|}` and space
//! escaped, and dot-segments removed by RFC 3986 §5.2.4 — which keeps empty segments:
//! `/a/x///../../p/` is `/a/x/p/`, not `/p/`.

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
    /// A backslash, a control character or a non-ASCII byte, which servers read differently.
    #[error("the path contains a backslash, a control character or a non-ASCII character")]
    ForbiddenCharacter,
    /// `%` not followed by two hex digits.
    #[error("the path contains a malformed percent-encoding")]
    BadPercentEncoding,
    /// A dot-segment with path parameters (`..;x`), which Envoy and servlet containers resolve
    /// as `..` and other servers keep.
    #[error("the path contains a dot-segment with parameters")]
    DotSegmentWithParameters,
    /// Dot-segments, encoded unreserved characters or characters a normalizing mesh escapes.
    #[error(
        "the path is not in normal form (a normalizing mesh would send {normal:?}): the gateway \
         in front must normalize paths (Envoy normalize_path, Istio pathNormalization BASE or \
         stricter)"
    )]
    NotNormal {
        /// What a normalizing mesh would have sent instead.
        normal: String,
    },
    /// An empty segment before the last one (`/a//b`).
    #[error(
        "the path contains an empty segment ('//'), which apps read differently (some merge it, \
         some do not); to accept such paths, have the mesh merge slashes (Istio \
         pathNormalization MERGE_SLASHES)"
    )]
    EmptySegment,
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

/// Printable ASCII that Envoy's path canonicalizer escapes rather than passes.
fn is_escaped_by_the_mesh(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}'
    )
}

/// The path a request carries, accepted only in normal form. Returns it unchanged, or why
/// it is refused.
pub fn checked_path(raw: &str) -> Result<&str, PathError> {
    if plainly_normal(raw) {
        return Ok(raw);
    }
    let normal = normalize_path(raw)?;
    if normal != raw {
        return Err(PathError::NotNormal { normal });
    }
    // Only the last segment may be empty (a trailing slash): `/a//b` names `/a/b` for an app
    // that merges slashes (nginx, Go's ServeMux redirect) and another route for one that does
    // not (Express, grpc-gateway).
    if raw[1..].split('/').rev().skip(1).any(str::is_empty) {
        return Err(PathError::EmptySegment);
    }
    Ok(raw)
}

/// Whether `raw` is normal on its face, so that [`checked_path`] need not normalize it (most
/// requests' paths): only letters, digits, `-`, `_`, `~`, `.` and `/` (nothing to decode or
/// escape), starting with `/`, no empty segment but the last, no `.` or `..` segment. Such a
/// path is its own normal form (the `path_normalize` fuzz target and a test hold it to that).
pub fn plainly_normal(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/')
        || !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.' | b'/'))
    {
        return false;
    }
    let mut segments = raw[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// The normal form of a raw path (no query), as a normalizing mesh would send it: unreserved
/// escapes decoded, `"<>^`{|}` and space escaped, dot-segments removed (RFC 3986 §5.2.4, never
/// above `/`, empty segments kept). Refuses what no normalization makes unambiguous.
/// Idempotent: the normal form of a normal form is itself.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let decoded = decode_unreserved(raw)?;
    let mut output: Vec<&str> = Vec::new();
    let mut segments = decoded.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let bare = segment.split(';').next().unwrap_or_default();
        if segment.contains(';') && (bare == "." || bare == "..") {
            return Err(PathError::DotSegmentWithParameters);
        }
        let last = segments.peek().is_none();
        match segment {
            "." => {
                if last {
                    output.push("");
                }
            }
            ".." => {
                output.pop();
                if last {
                    output.push("");
                }
            }
            s => output.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &output {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() {
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
            let digit = |h: u8| {
                (h as char)
                    .to_digit(16)
                    .ok_or(PathError::BadPercentEncoding)
            };
            let value = (digit(hex[0])? * 16 + digit(hex[1])?) as u8;
            match value {
                b'/' => return Err(PathError::EncodedSeparator("%2F")),
                b'\\' => return Err(PathError::EncodedSeparator("%5C")),
                0 => return Err(PathError::EncodedSeparator("%00")),
                v if is_unreserved(v) => out.push(v as char),
                // Kept exactly as sent, hex case included: so does Envoy.
                _ => out.push_str(&raw[i..i + 3]),
            }
            i += 3;
        } else {
            // Envoy turns `\` into `/` and rejects raw non-ASCII: neither reaches a normalized
            // check, and no reading of them is safe.
            if b == b'\\' || b.is_ascii_control() || !b.is_ascii() {
                return Err(PathError::ForbiddenCharacter);
            }
            if is_escaped_by_the_mesh(b) {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push(b as char);
            }
            i += 1;
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
    /// Parses a configured prefix, which must be in normal form (a prefix no request in normal
    /// form can start with would match nothing).
    pub fn parse(prefix: &str) -> Result<PathPrefix, String> {
        let normalized = checked_path(prefix).map_err(|e| format!("{prefix:?}: {e}"))?;
        Ok(PathPrefix {
            base: normalized.trim_end_matches('/').to_string(),
        })
    }

    /// Whether a path in normal form lies under this prefix.
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
    fn a_plainly_normal_path_is_its_own_normal_form() {
        // Every path of up to 6 bytes over an alphabet with each kind of trouble.
        let alphabet = [b'/', b'a', b'.', b'%', b'2', b'~', b';'];
        let mut checked = 0;
        for len in 1..=6u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut rest = n;
                let raw: String = (0..len)
                    .map(|_| {
                        let c = alphabet[rest % alphabet.len()] as char;
                        rest /= alphabet.len();
                        c
                    })
                    .collect();
                if plainly_normal(&raw) {
                    checked += 1;
                    assert_eq!(normalize_path(&raw).as_deref(), Ok(raw.as_str()), "{raw:?}");
                    assert!(
                        !raw[1..].split('/').rev().skip(1).any(str::is_empty),
                        "{raw:?}"
                    );
                }
            }
        }
        assert!(checked > 500, "{checked}");
        for refused in ["/a//b", "/./a", "/a/..", "/a%2e", "a", "/a b", "/a;b"] {
            assert!(!plainly_normal(refused), "{refused:?}");
        }
    }

    #[test]
    fn normal_form_removes_dot_segments_and_keeps_empty_ones() {
        let cases = [
            ("/", "/"),
            ("//", "//"),
            ("/a//b", "/a//b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc", "/etc"),
            ("/a/x///../../public/", "/a/x/public/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/%2E/b", "/a/b"),
            ("/%61%62c", "/abc"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3fb"),
            ("/a b", "/a%20b"),
            ("/a{b}|c", "/a%7Bb%7D%7Cc"),
            ("/notebook/ns/", "/notebook/ns/"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/a;b/c", "/a;b/c"),
            ("/a[0]", "/a[0]"),
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
    fn only_paths_in_normal_form_are_accepted() {
        for ok in [
            "/", "/a/b", "/a/b/", "/a%20b", "/a%3fb", "/a;b/c", "/a[0]", "/~x",
        ] {
            assert_eq!(checked_path(ok), Ok(ok), "{ok}");
        }
        for (raw, normal) in [
            ("/a/x///../../public/", "/a/x/public/"),
            ("/a/./b", "/a/b"),
            ("/%70ublic/", "/public/"),
            ("/a b", "/a%20b"),
            ("/a/..", "/"),
        ] {
            assert_eq!(
                checked_path(raw),
                Err(PathError::NotNormal {
                    normal: normal.into()
                }),
                "{raw}"
            );
        }
        for raw in ["//", "//a", "/a//b", "/a//"] {
            assert_eq!(checked_path(raw), Err(PathError::EmptySegment), "{raw}");
        }
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for raw in [
            "/a%2Fb", "/a%2fb", "/a%5cb", "/a%00", "/a\\b", "/a%", "/a%zz", "/a%2", "/a/..;/b",
            "/a/.;x/b", "a/b", "", "/a\u{0}b", "/a\tb", "/é",
        ] {
            assert!(normalize_path(raw).is_err(), "{raw:?} must be refused");
            assert!(checked_path(raw).is_err(), "{raw:?} must be refused");
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
        assert!(PathPrefix::parse("/a/../b").is_err());
    }
}
