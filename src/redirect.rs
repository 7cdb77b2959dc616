//! Where a browser may be sent after login or logout: only the gateway's own origin.
//!
//! Accepted: a path that starts with exactly one `/`, or an absolute `http(s)` URL whose origin
//! is the public origin exactly. Refused: anything else; anything containing a backslash,
//! whitespace or control character (browsers repair those into other hosts); and, as
//! oauth2-proxy does, any `//`, `/./` or `/../` anywhere after the origin, since an app behind
//! the gateway may redirect again on what follows (`/https://evil.example`, `?next=//evil`). The
//! result is re-serialized by the URL parser, so what goes into `Location` is what was checked.

use url::Url;

/// The checked target as a path with query (`/x?y`), or `None` when it must be refused.
pub fn same_origin_target(target: &str, public_origin: &Url) -> Option<String> {
    if target.is_empty()
        || target
            .chars()
            .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let resolved = if target.starts_with('/') {
        if has_empty_or_dot_segment(target) {
            return None;
        }
        public_origin.join(target).ok()?
    } else {
        let absolute = Url::parse(target).ok()?;
        if !matches!(absolute.scheme(), "http" | "https") {
            return None;
        }
        let after_origin = target
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
            .unwrap_or("");
        if has_empty_or_dot_segment(after_origin) {
            return None;
        }
        absolute
    };
    if resolved.origin() != public_origin.origin()
        || !resolved.username().is_empty()
        || resolved.password().is_some()
    {
        return None;
    }
    let mut out = resolved.path().to_string();
    if let Some(query) = resolved.query() {
        out.push('?');
        out.push_str(query);
    }
    // Checked again on what will be sent: the parser accepts spellings such as `https:host/…`
    // whose path the checks above never saw.
    if !out.starts_with('/') || has_empty_or_dot_segment(&out) {
        return None;
    }
    Some(out)
}

/// `//`, `/./` or `/../` anywhere.
fn has_empty_or_dot_segment(path: &str) -> bool {
    path.contains("//") || path.contains("/./") || path.contains("/../") || path.ends_with("/..")
}

/// Like [`same_origin_target`], falling back to `/`.
pub fn safe_target(target: &str, public_origin: &Url) -> String {
    same_origin_target(target, public_origin).unwrap_or_else(|| "/".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Url {
        Url::parse("https://kubeflow.example.com").unwrap()
    }

    #[test]
    fn keeps_same_origin_paths() {
        let o = origin();
        assert_eq!(same_origin_target("/", &o).as_deref(), Some("/"));
        assert_eq!(
            same_origin_target("/notebook/a/b/lab?x=1&y=%2F", &o).as_deref(),
            Some("/notebook/a/b/lab?x=1&y=%2F")
        );
        assert_eq!(
            same_origin_target("https://kubeflow.example.com/pipeline/#/runs", &o).as_deref(),
            Some("/pipeline/")
        );
    }

    #[test]
    fn refuses_other_origins_and_tricks() {
        let o = origin();
        for bad in [
            "",
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\/evil.com",
            "/\t/evil.com",
            "https://evil.com/",
            "http://kubeflow.example.com/",
            "https://kubeflow.example.com:8443/",
            "https://kubeflow.example.com@evil.com/",
            "https://user:pw@kubeflow.example.com/",
            "https://kubeflow.example.com.evil.com/",
            "javascript:alert(1)",
            "evil.com",
            ".evil.com",
            "/%0a/evil.com".replace("%0a", "\n").as_str(),
            "/https://evil.com",
            "/a/../b",
            "/?next=//evil.com",
            "https:kubeflow.example.com/https://evil.com",
            "https:kubeflow.example.com/?next=//evil.com",
            "https:/kubeflow.example.com/a//b",
            "/x?y/..#z",
        ] {
            assert_eq!(same_origin_target(bad, &o), None, "{bad:?}");
        }
        assert_eq!(safe_target("//evil.com", &o), "/");
    }
}
