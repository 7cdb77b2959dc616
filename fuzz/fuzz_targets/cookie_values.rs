//! `cookie_values` on arbitrary `Cookie` headers (repeated, or merged by Envoy with `,`).
//!
//! Input (text, so seeds are readable): the first line is the cookie name to look up; every
//! further line is a header, `name: value` (most seeds use `cookie`, in any case).
//!
//! Invariants: no value contains `;` or `,`; no value keeps a surrounding `"`; every value comes
//! from a `Cookie` header, one per `name=` pair whose trimmed name is exactly the asked name.
#![no_main]

use authgate::authn::session::cookie_values;
use authgate::request::Headers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let name = lines.next().unwrap_or_default();
    let headers = Headers::from_pairs(lines.map(|line| match line.split_once(':') {
        Some((n, v)) => (n.to_string(), v.trim_start().to_string()),
        None => (line.to_string(), String::new()),
    }));
    let cookie_headers: Vec<&str> = headers.get_all("cookie").collect();
    let mut count = 0;
    for value in cookie_values(&headers, name) {
        count += 1;
        assert!(!value.contains(';') && !value.contains(','), "{value:?}");
        assert!(
            !value.starts_with('"') && !value.ends_with('"'),
            "{value:?}"
        );
        assert!(
            cookie_headers.iter().any(|h| h.contains(value)),
            "{value:?} is not from a cookie header"
        );
        // A name containing a separator or `=` can never match: pairs are split on them.
        assert!(!name.contains(';') && !name.contains(',') && !name.contains('='));
    }
    let pairs = cookie_headers
        .iter()
        .flat_map(|h| h.split([';', ',']))
        .filter(|p| {
            p.trim()
                .split_once('=')
                .is_some_and(|(n, _)| n.trim() == name)
        })
        .count();
    assert_eq!(count, pairs);
});
