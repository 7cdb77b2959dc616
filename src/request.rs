//! The transport-free request that `decide()` judges. Both the gRPC and the HTTP adapter build
//! one; nothing here knows protobuf or axum.

use std::net::IpAddr;

use bytestring::ByteString;
pub use http::Method;

use crate::path::{PathError, checked_path, split_target};

/// Request headers as a list of (lower-cased name, value), repeated names kept as separate
/// entries. Envoy's gRPC `headers` map arrives merged (`a,b`); its `header_map` and the HTTP
/// transport keep repeats apart. Both shapes are handled by reading every entry. Names and
/// values are UTF-8 views of the bytes they arrived in: the gRPC adapter takes them out of the
/// received message without a copy per header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(ByteString, ByteString)>);

impl Headers {
    /// Builds from (name, value) pairs; names are lower-cased.
    pub fn from_pairs<N: AsRef<str>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Headers {
        Headers::from_owned(
            pairs
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_string(), v.into())),
        )
    }

    /// Builds from owned (name, value) pairs, lower-casing names in place: the gRPC adapter
    /// moves the strings it decoded instead of copying them.
    pub fn from_owned(pairs: impl IntoIterator<Item = (String, String)>) -> Headers {
        Headers::from_text(
            pairs
                .into_iter()
                .map(|(n, v)| (ByteString::from(n), ByteString::from(v))),
        )
    }

    /// Builds from UTF-8 names and values; a name with an upper-case letter is lower-cased
    /// into a copy (Envoy sends them lower-cased).
    pub fn from_text(pairs: impl IntoIterator<Item = (ByteString, ByteString)>) -> Headers {
        Headers(
            pairs
                .into_iter()
                .map(|(n, v)| {
                    if n.bytes().any(|b| b.is_ascii_uppercase()) {
                        (ByteString::from(n.to_ascii_lowercase()), v)
                    } else {
                        (n, v)
                    }
                })
                .collect(),
        )
    }

    /// Every value of `name` (lower-case), in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }

    /// The value of a header that must appear once; `None` when absent.
    /// An error when it appears several times (whether a comma inside one value means a merge is
    /// left to the caller: some headers, like `accept`, legitimately contain commas).
    pub fn get_single<'a>(&'a self, name: &'a str) -> Result<Option<&'a str>, Repeated> {
        let mut values = self.get_all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(Repeated);
        }
        Ok(first)
    }

    /// The first value of `name`.
    pub fn get<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.get_all(name).next()
    }

    /// All (name, value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }
}

/// A header that must appear once appeared several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("header repeated")]
pub struct Repeated;

/// A method that is not an HTTP token (empty, or with a space or a control character): Envoy
/// never forwards one, so it is refused like an ambiguous path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request method is not an HTTP method token")]
pub struct BadMethod;

/// One request to judge.
#[derive(Debug, Clone)]
pub struct Request {
    /// The HTTP method, upper-cased as sent (`get` is judged as `GET`), or why it was refused.
    pub method: Result<Method, BadMethod>,
    /// `http` or `https`, as the client used it.
    pub scheme: String,
    /// Host (`:authority`), lower-cased, port kept.
    pub host: String,
    /// The raw request target's path part, as sent.
    pub raw_path: String,
    /// The path every rule matches (the raw path, accepted only in normal form), or why it was
    /// refused.
    pub path: Result<String, PathError>,
    /// The raw query string (without `?`).
    pub query: String,
    /// Request headers.
    pub headers: Headers,
    /// The downstream client address as Envoy saw it.
    pub client_ip: Option<IpAddr>,
    /// The request body, when the transport has it (only authgate's own endpoints read it).
    pub body: Vec<u8>,
}

impl Request {
    /// Builds a request from a raw target (path with query, as Envoy sends it).
    pub fn new(
        method: &str,
        scheme: &str,
        host: &str,
        target: &str,
        headers: Headers,
        client_ip: Option<IpAddr>,
    ) -> Request {
        Request::from_owned(
            method.to_string(),
            scheme.to_string(),
            host.to_string(),
            target,
            headers,
            client_ip,
        )
    }

    /// As [`Request::new`], reusing the method, scheme and host strings.
    pub fn from_owned(
        mut method: String,
        mut scheme: String,
        mut host: String,
        target: &str,
        headers: Headers,
        client_ip: Option<IpAddr>,
    ) -> Request {
        method.make_ascii_uppercase();
        // `Method::from_bytes` keeps the standard methods as constants (no allocation) and takes
        // any other token as an extension method, which no rule names.
        let method = Method::from_bytes(method.as_bytes()).map_err(|_| BadMethod);
        scheme.make_ascii_lowercase();
        host.make_ascii_lowercase();
        let (raw_path, query) = split_target(target);
        Request {
            method,
            scheme,
            host,
            raw_path: raw_path.to_string(),
            path: checked_path(raw_path).map(str::to_string),
            query: query.to_string(),
            headers,
            client_ip,
            body: Vec::new(),
        }
    }

    /// With a body.
    pub fn with_body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }

    /// The method, or `"-"` for a refused one (for logs).
    pub fn method_for_log(&self) -> &str {
        self.method.as_ref().map_or("-", Method::as_str)
    }

    /// The normalized path, or `"-"` for a refused one (for logs).
    pub fn path_for_log(&self) -> &str {
        self.path.as_deref().unwrap_or("-")
    }

    /// A top-level browser navigation: GET/HEAD, asks for HTML, not XHR/fetch, not an API route.
    /// Only these are redirected to a login page or shown an HTML error.
    pub fn is_browser_navigation(&self, api_routes: &[crate::path::PathPrefix]) -> bool {
        let wants_html = self
            .headers
            .get_all("accept")
            .any(|a| a.to_ascii_lowercase().contains("text/html"));
        let xhr = self
            .headers
            .get_all("x-requested-with")
            .any(|v| v.eq_ignore_ascii_case("xmlhttprequest"));
        let fetch_mode = self.headers.get("sec-fetch-mode");
        let path = self.path.as_deref().unwrap_or("/");
        matches!(self.method, Ok(Method::GET | Method::HEAD))
            && wants_html
            && !xhr
            && fetch_mode.is_none_or(|m| m.eq_ignore_ascii_case("navigate"))
            && !api_routes.iter().any(|p| p.matches(path))
    }

    /// Values of a query parameter, percent-decoded.
    pub fn query_values(&self, name: &str) -> Vec<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_target_and_checks_its_path() {
        let r = Request::new(
            "get",
            "HTTPS",
            "Example.COM",
            "/a/c?namespace=x&namespace=y",
            Headers::from_pairs([("Accept", "text/html")]),
            None,
        );
        assert_eq!(r.method, Ok(Method::GET));
        assert_eq!(r.host, "example.com");
        assert_eq!(r.path.as_deref(), Ok("/a/c"));
        assert_eq!(r.query_values("namespace"), ["x", "y"]);
        assert_eq!(r.headers.get("accept"), Some("text/html"));
        let raw = Request::new("GET", "https", "h", "/a//b/../c", Headers::default(), None);
        assert!(raw.path.is_err());
    }

    #[test]
    fn a_method_is_a_token() {
        let method = |m: &str| Request::new(m, "https", "h", "/", Headers::default(), None).method;
        assert_eq!(method("patch"), Ok(Method::PATCH));
        assert_eq!(
            method("PROPFIND").map(|m| m.to_string()),
            Ok("PROPFIND".into())
        );
        for bad in ["", "GET /", "G\tET", "GE\u{0}T", "GÉT"] {
            assert_eq!(method(bad), Err(BadMethod), "{bad:?}");
        }
    }

    #[test]
    fn single_header_detects_repeats() {
        let h = Headers::from_pairs([("authorization", "a"), ("Authorization", "b")]);
        assert!(h.get_single("authorization").is_err());
        assert_eq!(h.get_single("cookie"), Ok(None));
    }
}
