//! Route rules: which permission a request needs, and in which namespace.
//!
//! Templates match the path (in normal form, see `crate::path`) segment by segment. Literal
//! segments compare case-insensitively and ignore `;parameters`, so that `/NoteBook;x/…` cannot
//! slip past the notebook rule to an app router that is case-insensitive or strips parameters:
//! matching *more* requests to a rule is the safe direction. For the same reason a trailing
//! slash is, unless a rule says how its app reads it, matched both as no segment and as an empty
//! one, and a placeholder never accepts an empty segment: the request is refused (400).
//! Query parameters are read as the app's parser reads them (`super::query`).

use serde::Serialize;

use super::query::{DEFAULT_MAX_QUERY_PARAMETERS, Expected, Parameter, Query};
use crate::config::{
    AuthorizationConfig, Problem, QueryParser, QueryValueConfig, RuleConfig, TrailingSlash,
};
use crate::request::{Method, Request};

/// One segment of a path template.
#[derive(Debug, Clone)]
enum Segment {
    /// Matches this text (lower-cased).
    Literal(String),
    /// Matches one segment and captures it.
    Capture(String),
    /// Literal text around placeholders inside one segment
    /// (`viewer-{id}-service.{namespace}.svc.cluster.local:80`): literal parts compare
    /// ASCII-case-insensitively, each placeholder takes at least one character.
    Pattern(regex::Regex, Vec<String>),
    /// `*`: any one segment.
    Any,
    /// `**`: the rest, zero or more segments.
    Rest,
}

/// What a matched rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A SubjectAccessReview with these attributes (placeholders unresolved).
    Review(ResourceTemplate),
    /// Any authenticated identity passes.
    Allow,
    /// Nobody passes.
    Deny,
}

/// Resource attributes as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceTemplate {
    group: String,
    version: String,
    resource: String,
    subresource: String,
    name: String,
    verb: String,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name.
    pub name: String,
    /// The template as configured (for explain).
    pub path: String,
    segments: Vec<Segment>,
    methods: Vec<Method>,
    /// (lower-case header name, lower-case text one of its values must contain)
    header_conditions: Vec<(String, String)>,
    trailing_slash: TrailingSlash,
    query_parser: QueryParser,
    query: Vec<(Parameter, Expected)>,
    namespace_query: Option<Parameter>,
    namespace_header: Option<String>,
    namespace_optional: bool,
    namespace_default: Option<String>,
    has_namespace_segment: bool,
    target: Target,
    /// The app verifies the bearer token itself: it is not removed upstream.
    pub forward_credentials: bool,
    /// Request headers removed before the app when this rule lets a request through.
    pub remove_headers: Vec<String>,
    case_sensitive: bool,
    /// Placeholders inside a segment (each must hold a DNS label).
    pattern_captures: Vec<String>,
}

/// The SubjectAccessReview resource attributes of one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResourceAttributes {
    /// Namespace (empty for cluster-scoped checks).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Verb.
    pub verb: String,
    /// API group.
    pub group: String,
    /// API version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Resource.
    pub resource: String,
    /// Subresource.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl ResourceAttributes {
    /// `get notebooks.kubeflow.org "nb"` — for messages.
    pub fn describe(&self) -> String {
        let mut resource = self.resource.clone();
        if !self.subresource.is_empty() {
            resource = format!("{resource}/{}", self.subresource);
        }
        if !self.group.is_empty() {
            resource = format!("{resource}.{}", self.group);
        }
        if self.name.is_empty() {
            format!("{} {resource}", self.verb)
        } else {
            format!("{} {resource} {:?}", self.verb, self.name)
        }
    }
}

/// What the rules say about one request.
#[derive(Debug, Clone)]
pub enum Verdict<'a> {
    /// No rule matched.
    NoRule,
    /// A rule matched and lets any authenticated identity through (`allow: true`, or an
    /// optional namespace the request leaves out: the app checks).
    Allow(&'a Rule),
    /// A rule matched and needs this permission.
    Review(&'a Rule, ResourceAttributes),
    /// A rule matched but the namespace is missing, ambiguous or invalid, or the method has no
    /// verb: denied without asking anyone.
    Refuse(&'a Rule, String),
    /// A rule matched but the request is malformed (400), asked of no one: a placeholder that
    /// names an object holds no Kubernetes object name or is empty, or the query is read
    /// differently by different parsers.
    Invalid(&'a Rule, String),
}

/// The compiled rules, in order.
#[derive(Debug, Clone)]
pub struct RuleSet {
    rules: Vec<Rule>,
    max_query_parameters: usize,
}

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet {
            rules: Vec::new(),
            max_query_parameters: DEFAULT_MAX_QUERY_PARAMETERS,
        }
    }
}

impl RuleSet {
    /// Compiles the configured rules with the default query bound, reporting every problem.
    pub fn compile(configs: &[RuleConfig]) -> Result<RuleSet, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let mut names = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let key = format!("authorization.rules[{i}]");
            let mut bad = |field: &str, message: String| {
                problems.push(Problem {
                    key: format!("{key}{field}"),
                    message,
                })
            };
            if config.name.trim().is_empty() {
                bad(".name", "every rule needs a name".into());
            } else if names.contains(&config.name) {
                bad(".name", format!("{:?} is used by two rules", config.name));
            }
            names.push(config.name.clone());
            match compile_rule(config) {
                Ok(rule) => rules.push(rule),
                Err(errors) => {
                    for (field, message) in errors {
                        bad(field, message);
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(RuleSet {
                rules,
                ..RuleSet::default()
            })
        } else {
            Err(problems)
        }
    }

    /// Compiles the `authorization` section: its rules and its query bound.
    pub fn from_config(config: &AuthorizationConfig) -> Result<RuleSet, Vec<Problem>> {
        let mut set = RuleSet::compile(&config.rules)?;
        set.max_query_parameters = config.max_query_parameters;
        Ok(set)
    }

    /// Whether any rule needs a SubjectAccessReview.
    pub fn needs_reviews(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.target, Target::Review(_)))
    }

    /// The first rule that matches, and what it asks for. `path` is the request's path in
    /// normal form.
    pub fn evaluate(&self, req: &Request, path: &str) -> Verdict<'_> {
        let segments = request_segments(path);
        let mut query: Option<Query> = None;
        let form_post = is_form_post(req);
        for rule in &self.rules {
            // grpc-gateway serves a form-encoded POST with the handler of any method the path
            // has (a GET, a DELETE), reading parameters from the body: the rule of no method
            // can be trusted for it.
            let any_method = form_post && rule.query_parser == QueryParser::GrpcGateway;
            if !any_method
                && !rule.methods.is_empty()
                && !req.method.as_ref().is_ok_and(|m| rule.methods.contains(m))
            {
                continue;
            }
            let Some(captures) = rule.match_path(&segments) else {
                continue;
            };
            if !rule.headers_match(req) {
                continue;
            }
            if any_method {
                return Verdict::Invalid(
                    rule,
                    "a form-encoded POST to a grpc-gateway route is refused: the app may run \
                     another method's handler for it, with parameters from the body"
                        .into(),
                );
            }
            if !rule.reads_query() {
                return rule.verdict(req, None, &captures);
            }
            let query = query.get_or_insert_with(|| Query::parse(&req.query));
            if query.pieces() > self.max_query_parameters {
                return Verdict::Invalid(
                    rule,
                    format!(
                        "the query has {} parameters, more than the {} a rule that reads it \
                         accepts (authorization.max_query_parameters)",
                        query.pieces(),
                        self.max_query_parameters
                    ),
                );
            }
            match rule.conditions_hold(query) {
                Ok(true) => return rule.verdict(req, Some(query), &captures),
                Ok(false) => continue,
                Err(why) => return Verdict::Invalid(rule, why),
            }
        }
        Verdict::NoRule
    }
}

/// A POST whose body grpc-gateway would parse as a form (`isPathLengthFallback`: it compares the
/// content type exactly; any parameters or case are refused too).
fn is_form_post(req: &Request) -> bool {
    req.method == Ok(Method::POST)
        && req.headers.get_all("content-type").any(|v| {
            v.trim_start()
                .get(..33)
                .is_some_and(|t| t.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
        })
}

/// `/a/b` → `["a", "b"]`, `/a/b/` → `["a", "b", ""]`, `/` → `[]`.
fn request_segments(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// A template's segments; its own trailing slash means nothing.
fn template_segments(path: &str) -> Vec<&str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    }
}

/// The part of a segment that app routers compare: `;parameters` dropped, lower-cased.
/// Read decoded too: Go's mux (grpc-gateway) routes on the decoded path, so `runs%3A` is
/// `runs:` there.
fn comparable(segment: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    decoded
        .split(';')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Whether a path segment is the literal (lower-case) as app routers compare it; no allocation
/// for the usual segment without escapes or `;parameters`.
fn literal_matches(segment: &str, literal: &str) -> bool {
    if segment.contains(['%', ';']) {
        comparable(segment) == literal
    } else {
        segment.eq_ignore_ascii_case(literal)
    }
}

/// grpc-gateway (KFP builds its routes with `AssumeColonVerbOpt`) reads the text after the last
/// `:` of the last segment as a custom verb: `runs:` is the route `runs`. Matching the segment
/// without it applies the rule to every verb, the safe direction.
fn without_verb(segment: &str) -> &str {
    // The last colon as Go sees it after decoding: raw, or `%3A` in either case (no allocation:
    // this runs for every grpc-gateway rule a request's path reaches).
    let bytes = segment.as_bytes();
    let encoded = (0..bytes.len().saturating_sub(2)).rev().find(|&i| {
        bytes[i] == b'%' && bytes[i + 1] == b'3' && bytes[i + 2].eq_ignore_ascii_case(&b'a')
    });
    match segment.rfind(':').max(encoded) {
        Some(i) => &segment[..i],
        None => segment,
    }
}

fn compile_rule(config: &RuleConfig) -> Result<Rule, Vec<(&'static str, String)>> {
    let mut errors = Vec::new();
    let mut segments = Vec::new();
    let mut captures: Vec<String> = Vec::new();
    let mut pattern_captures: Vec<String> = Vec::new();
    if !config.path.starts_with('/') {
        errors.push((".path", format!("{:?} must start with '/'", config.path)));
    }
    let raw: Vec<&str> = template_segments(&config.path);
    for (i, seg) in raw.iter().enumerate() {
        let compiled = if seg.is_empty() {
            errors.push((".path", format!("{:?} has an empty segment", config.path)));
            Segment::Any
        } else if *seg == "**" {
            if i + 1 != raw.len() {
                errors.push((".path", "`**` may only be the last segment".into()));
            }
            Segment::Rest
        } else if *seg == "*" {
            Segment::Any
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                errors.push((".path", format!("bad placeholder {seg:?}")));
            } else if captures.iter().any(|c| c == name) {
                errors.push((".path", format!("placeholder {seg:?} appears twice")));
            }
            captures.push(name.to_string());
            Segment::Capture(name.to_string())
        } else if seg.contains(['{', '}']) {
            match compile_pattern(seg, config.case_sensitive) {
                Ok((regex, names)) => {
                    for name in &names {
                        if captures.iter().any(|c| c == name) {
                            errors.push((".path", format!("placeholder {{{name}}} appears twice")));
                        }
                        captures.push(name.clone());
                        pattern_captures.push(name.clone());
                    }
                    Segment::Pattern(regex, names)
                }
                Err(why) => {
                    errors.push((".path", format!("segment {seg:?}: {why}")));
                    Segment::Any
                }
            }
        } else if seg.contains(['*', '%', '?']) {
            errors.push((
                ".path",
                format!("segment {seg:?}: wildcards must be whole segments"),
            ));
            Segment::Any
        } else if config.case_sensitive {
            Segment::Literal(seg.to_string())
        } else {
            Segment::Literal(comparable(seg))
        };
        segments.push(compiled);
    }

    let mut methods = Vec::new();
    for m in &config.methods {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if KNOWN_METHODS.contains(&method) => methods.push(method),
            _ => errors.push((".methods", format!("unknown method {m:?}"))),
        }
    }

    let has_namespace_segment = captures.iter().any(|c| c == "namespace");
    let (namespace_query, namespace_header, namespace_optional, namespace_default) =
        match &config.namespace {
            None => (None, None, false, None),
            Some(ns) => {
                if let Some(default) = &ns.default {
                    if !is_namespace_name(default) {
                        errors.push((
                            ".namespace.default",
                            format!("{default:?} is not a namespace name"),
                        ));
                    }
                    if ns.optional {
                        errors.push((
                            ".namespace",
                            "`optional` and `default` exclude each other".into(),
                        ));
                    }
                    if has_namespace_segment {
                        errors.push((
                        ".namespace.default",
                        "a {namespace} path segment is never absent: drop `default` or the segment"
                            .into(),
                    ));
                    }
                }
                if ns.query.is_none() && ns.header.is_none() {
                    errors.push((".namespace", "name a `query` or a `header`".into()));
                }
                if let Some(h) = &ns.header
                    && http::HeaderName::from_bytes(h.as_bytes()).is_err()
                {
                    errors.push((".namespace.header", format!("{h:?} is not a header name")));
                }
                if ns.optional && has_namespace_segment {
                    errors.push((
                    ".namespace.optional",
                    "a {namespace} path segment is never absent: drop `optional` or the segment"
                        .into(),
                ));
                }
                (
                    ns.query
                        .as_deref()
                        .map(|q| Parameter::new(q, config.query_parser)),
                    ns.header.as_ref().map(|h| h.to_ascii_lowercase()),
                    ns.optional,
                    ns.default.clone(),
                )
            }
        };

    let mut query = Vec::new();
    for (key, value) in &config.query {
        let expected = match value {
            QueryValueConfig::Text(text) => Expected::Text(text.clone()),
            QueryValueConfig::Enum { name, number } => {
                if config.query_parser != QueryParser::GrpcGateway {
                    errors.push((
                        ".query",
                        format!("{key}: an enum value needs `query_parser: grpc-gateway`"),
                    ));
                }
                Expected::Enum {
                    name: name.clone(),
                    number: *number,
                }
            }
        };
        query.push((Parameter::new(key, config.query_parser), expected));
    }

    let mut remove_headers = Vec::new();
    for name in &config.remove_headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push((".remove_headers", format!("{name:?} is not a header name")));
        }
        remove_headers.push(name.to_ascii_lowercase());
    }
    let mut header_conditions = Vec::new();
    for (name, condition) in &config.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errors.push((".headers", format!("{name:?} is not a header name")));
        }
        if condition.contains.is_empty() {
            errors.push((".headers", format!("{name}: `contains` must not be empty")));
        }
        header_conditions.push((
            name.to_ascii_lowercase(),
            condition.contains.to_ascii_lowercase(),
        ));
    }

    let targets = usize::from(config.resource.is_some())
        + usize::from(config.allow)
        + usize::from(config.deny);
    let target = match (&config.resource, config.allow, config.deny) {
        _ if targets > 1 => {
            errors.push((
                "",
                "a rule has one of `resource`, `allow: true` and `deny: true`, not several".into(),
            ));
            Target::Deny
        }
        (None, false, false) => {
            errors.push((
                "",
                "a rule needs `resource` (what to check), `allow: true` or `deny: true`".into(),
            ));
            Target::Deny
        }
        (None, true, _) => Target::Allow,
        (None, _, true) => Target::Deny,
        (Some(r), _, _) => {
            if r.resource.trim().is_empty() {
                errors.push((".resource.resource", "must not be empty".into()));
            }
            for (field, value) in [(".resource.name", &r.name), (".resource.verb", &r.verb)] {
                if let Some(placeholder) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}'))
                    && !captures.iter().any(|c| c == placeholder)
                {
                    errors.push((
                        field,
                        format!("{value} is not a placeholder of the path {:?}", config.path),
                    ));
                }
            }
            Target::Review(ResourceTemplate {
                group: r.group.clone(),
                version: r.version.clone(),
                resource: r.resource.clone(),
                subresource: r.subresource.clone(),
                name: r.name.clone(),
                // A `{placeholder}` keeps its case: it names a capture.
                verb: if r.verb.starts_with('{') {
                    r.verb.clone()
                } else {
                    r.verb.to_ascii_lowercase()
                },
            })
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Rule {
        name: config.name.clone(),
        path: config.path.clone(),
        has_namespace_segment,
        segments,
        methods,
        header_conditions,
        trailing_slash: config.trailing_slash,
        query_parser: config.query_parser,
        query,
        namespace_query,
        namespace_header,
        namespace_optional,
        namespace_default,
        target,
        forward_credentials: config.forward_credentials,
        remove_headers,
        case_sensitive: config.case_sensitive,
        pattern_captures,
    })
}

/// `a{x}b.{y}` → an anchored regex with one group per placeholder. Two placeholders must be
/// apart (`{a}{b}` has no single reading).
fn compile_pattern(
    segment: &str,
    case_sensitive: bool,
) -> Result<(regex::Regex, Vec<String>), String> {
    let mut pattern = String::from("^");
    let mut names = Vec::new();
    let mut rest = segment;
    let mut last_was_capture = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let (name, tail) = after
                .split_once('}')
                .ok_or_else(|| "an unclosed '{'".to_string())?;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("bad placeholder {{{name}}}"));
            }
            if last_was_capture {
                return Err("two placeholders must be apart".into());
            }
            // A segment in normal form is printable ASCII without `/`: a small class, so a
            // template compiles fast (no Unicode tables).
            pattern.push_str(&format!("(?P<{name}>[!-.0-~]+?)"));
            names.push(name.to_string());
            last_was_capture = true;
            rest = tail;
        } else {
            let end = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..end];
            if literal.contains(['}', '*', '%', '?']) {
                return Err("wildcards, '}' and escapes cannot be part of a segment".into());
            }
            if !literal.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("a segment's literal text is printable ASCII".into());
            }
            if case_sensitive {
                pattern.push_str(&regex::escape(literal));
            } else {
                // ASCII case only, as literal segments compare.
                pattern.push_str(&format!("(?i-u:{})", regex::escape(literal)));
            }
            last_was_capture = false;
            rest = &rest[end..];
        }
    }
    pattern.push('$');
    regex::Regex::new(&pattern)
        .map(|regex| (regex, names))
        .map_err(|e| e.to_string())
}

impl Rule {
    /// Whether the header conditions hold: some value of each named header contains its text.
    fn headers_match(&self, req: &Request) -> bool {
        self.header_conditions.iter().all(|(name, text)| {
            req.headers
                .get_all(name)
                .any(|v| v.to_ascii_lowercase().contains(text.as_str()))
        })
    }

    /// Whether matching or judging a request needs its query.
    fn reads_query(&self) -> bool {
        !self.query.is_empty() || self.namespace_query.is_some()
    }

    /// The placeholders captured when the path matches, reading a trailing slash as the rule
    /// says its app does.
    fn match_path<'p>(&self, path: &[&'p str]) -> Option<Vec<(&str, &'p str)>> {
        let Some((&"", without)) = path.split_last() else {
            return self.match_segments(path);
        };
        match self.trailing_slash {
            TrailingSlash::SameRoute => self.match_segments(without),
            TrailingSlash::EmptySegment => self.match_segments(path),
            TrailingSlash::Either => self
                .match_segments(without)
                .or_else(|| self.match_segments(path)),
        }
    }

    fn match_segments<'p>(&self, path: &[&'p str]) -> Option<Vec<(&str, &'p str)>> {
        let mut captures = Vec::new();
        let mut i = 0;
        for segment in &self.segments {
            if matches!(segment, Segment::Rest) {
                i = path.len();
                break;
            }
            let mut text = *path.get(i)?;
            if i + 1 == path.len() && self.query_parser == QueryParser::GrpcGateway {
                text = without_verb(text);
            }
            match segment {
                Segment::Rest => unreachable!("handled above"),
                Segment::Literal(literal) if self.case_sensitive => {
                    if percent_encoding::percent_decode_str(text).decode_utf8_lossy() != *literal {
                        return None;
                    }
                }
                Segment::Literal(literal) => {
                    if !literal_matches(text, literal) {
                        return None;
                    }
                }
                Segment::Capture(name) => captures.push((name.as_str(), text)),
                Segment::Pattern(regex, names) => {
                    let found = regex.captures(text)?;
                    for name in names {
                        let m = found.name(name).expect("a group per placeholder");
                        captures.push((name.as_str(), &text[m.start()..m.end()]));
                    }
                }
                // `*` on an empty segment is refused like a placeholder: a rule before it must
                // not take `/a/` away from the `/a` rule an app that ignores the slash serves.
                Segment::Any if text.is_empty() => captures.push(("*", text)),
                Segment::Any => {}
            }
            i += 1;
        }
        (i == path.len()).then_some(captures)
    }

    /// Whether the query conditions hold. A condition parameter given several times (in any
    /// spellings) is ambiguous: it holds, so that the rule's stricter checks apply rather than
    /// none, and `verdict` refuses it.
    fn conditions_hold(&self, query: &Query) -> Result<bool, String> {
        for (parameter, want) in &self.query {
            let values = parameter.values(query)?;
            if values.is_empty() || (values.len() == 1 && !want.accepts(&values[0])) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn verdict<'r>(
        &'r self,
        req: &Request,
        query: Option<&Query>,
        captures: &[(&str, &str)],
    ) -> Verdict<'r> {
        if self.target == Target::Deny {
            return Verdict::Refuse(self, "this route is closed at the gateway".into());
        }
        // A placeholder inside a segment is typically part of a host name the app will call
        // (`viewer-{id}-service.{namespace}.svc…`): only a DNS label, so no `@`, `?`, `.` or
        // escape can move the host elsewhere.
        if let Some((name, value)) = captures.iter().find(|(name, value)| {
            self.pattern_captures.iter().any(|p| p == name) && !is_label(value)
        }) {
            return Verdict::Invalid(
                self,
                format!(
                    "{{{name}}} holds {value:?}: a placeholder inside a segment takes only a DNS label"
                ),
            );
        }
        if captures.iter().any(|(_, v)| v.is_empty()) {
            return Verdict::Invalid(
                self,
                "the path ends in a slash where the app may read an empty segment, and a \
                 placeholder or `*` of this rule would take it"
                    .into(),
            );
        }
        if let Some(query) = query {
            for (parameter, want) in &self.query {
                let values = parameter.values(query).unwrap_or_default();
                if values.iter().any(|v| !want.accepts(v)) {
                    return Verdict::Refuse(
                        self,
                        format!(
                            "query parameter {:?} is ambiguous (wanted {want})",
                            parameter.name
                        ),
                    );
                }
            }
        }
        let namespace = match self.namespace(req, query, captures) {
            Ok(Some(ns)) => ns,
            Ok(None) => return Verdict::Allow(self),
            Err(NamespaceError::Refused(why)) => return Verdict::Refuse(self, why),
            Err(NamespaceError::Invalid(why)) => return Verdict::Invalid(self, why),
        };
        let template = match &self.target {
            Target::Allow => return Verdict::Allow(self),
            Target::Deny => {
                return Verdict::Refuse(self, "this route is closed at the gateway".into());
            }
            Target::Review(t) => t,
        };
        let fill = |value: &str| -> String {
            match value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                Some(placeholder) => captures
                    .iter()
                    .find(|(n, _)| *n == placeholder)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default(),
                None => value.to_string(),
            }
        };
        let name = fill(&template.name);
        if template.name.starts_with('{') && !is_object_name(&name) {
            return Verdict::Invalid(self, format!("{name:?} is not a Kubernetes object name"));
        }
        let verb = if template.verb.is_empty() {
            match req
                .method
                .as_ref()
                .ok()
                .and_then(|m| verb_for_method(m, !name.is_empty()))
            {
                Some(verb) => verb.to_string(),
                None => {
                    return Verdict::Refuse(
                        self,
                        format!("method {} has no Kubernetes verb", req.method_for_log()),
                    );
                }
            }
        } else {
            fill(&template.verb)
        };
        Verdict::Review(
            self,
            ResourceAttributes {
                namespace,
                verb,
                group: template.group.clone(),
                version: template.version.clone(),
                resource: template.resource.clone(),
                subresource: template.subresource.clone(),
                name,
            },
        )
    }

    /// The one namespace all present sources agree on: required when the rule has a source
    /// (`Some("")` for a rule without one), `None` when an optional one is left out.
    fn namespace(
        &self,
        req: &Request,
        query: Option<&Query>,
        captures: &[(&str, &str)],
    ) -> Result<Option<String>, NamespaceError> {
        let mut found: Vec<String> = Vec::new();
        if self.has_namespace_segment
            && let Some((_, v)) = captures.iter().find(|(n, _)| *n == "namespace")
        {
            found.push(v.to_string());
        }
        if let (Some(parameter), Some(query)) = (&self.namespace_query, query) {
            found.extend(parameter.values(query).map_err(NamespaceError::Invalid)?);
        }
        if let Some(header) = &self.namespace_header {
            for value in req.headers.get_all(header) {
                // Envoy merges repeated headers with commas; each part is a value.
                for v in value.split(',') {
                    found.push(v.trim().to_string());
                }
            }
        }
        let has_source = self.has_namespace_segment
            || self.namespace_query.is_some()
            || self.namespace_header.is_some();
        // An optional namespace given empty is left out: to the app, an empty namespace is
        // none (KFP: shared pipelines; its own check applies).
        if found.iter().all(String::is_empty) {
            if self.namespace_optional {
                return Ok(None);
            }
            if let Some(default) = &self.namespace_default {
                return Ok(Some(default.clone()));
            }
        }
        let Some(first) = found.first() else {
            return if has_source {
                Err(NamespaceError::Refused(
                    "the request names no namespace".into(),
                ))
            } else {
                Ok(Some(String::new()))
            };
        };
        if let Some(other) = found.iter().find(|v| *v != first) {
            return Err(NamespaceError::Refused(format!(
                "the request names two namespaces ({first:?} and {other:?})"
            )));
        }
        if !is_namespace_name(first) {
            return Err(NamespaceError::Refused(format!(
                "{first:?} is not a valid namespace name"
            )));
        }
        Ok(Some(first.clone()))
    }
}

/// Why a rule found no namespace to review.
enum NamespaceError {
    /// Missing, ambiguous or not a namespace name: 403.
    Refused(String),
    /// Read differently by different parsers: 400.
    Invalid(String),
}

/// GET → get (with a name) or list; the rest by the usual REST mapping. Unknown methods have no
/// verb and are refused.
pub fn verb_for_method(method: &Method, has_name: bool) -> Option<&'static str> {
    Some(match *method {
        Method::GET | Method::HEAD | Method::OPTIONS if has_name => "get",
        Method::GET | Method::HEAD | Method::OPTIONS => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return None,
    })
}

/// The methods a rule may name.
const KNOWN_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// An RFC 1123 subdomain (at most 253 characters of lower-case letters, digits, `-` and `.`,
/// each dot-separated label starting and ending with a letter or digit): what Kubernetes
/// requires of the names of most objects, and of every object the rules name.
pub fn is_object_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_label)
}

/// An RFC 1123 label, as Kubernetes requires of namespace names.
pub fn is_namespace_name(name: &str) -> bool {
    is_label(name)
}

fn is_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests;
