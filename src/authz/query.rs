//! Query parameters as the app behind reads them.
//!
//! A rule that reads a parameter must see every value the app could act on, under every
//! spelling the app's parser accepts; where the readings could differ, the request is refused
//! rather than judged on one of them:
//! - **Bounded.** Express (the KFP UI's server) reads only the first 1,000 parameters, so a
//!   namespace placed after 1,000 junk parameters would be judged here and unseen there. A rule
//!   that reads the query refuses a query with more than `authorization.max_query_parameters`.
//! - **Bracket forms** (`namespace[]=`, `namespace[x]=`) are arrays or objects to Express's
//!   `qs` and extra values to grpc-gateway: a parameter a rule reads is refused in that form.
//! - **Aliases.** grpc-gateway (the KFP API) fills a field from its proto name and from its JSON
//!   name, part by part (`resource_reference_key.id`, `resourceReferenceKey.id`), in Go map
//!   order: every spelling is one parameter, and two different values are ambiguous.
//! - **Enum numbers.** grpc-gateway takes an enum by name or by number (`type=5`, and through Go's
//!   `strconv.ParseInt` also `05`, `+5`, `0x5`): a condition on an enum accepts every spelling.

use crate::config::QueryParser;

/// The default of `authorization.max_query_parameters`: far below Express's 1,000, far above
/// what any Kubeflow client sends.
pub const DEFAULT_MAX_QUERY_PARAMETERS: usize = 100;

/// The query of one request, decoded once (keys and values, `+` and `%XX` decoded).
#[derive(Debug, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
    /// `&`-separated pieces, empty ones included: what Express's limit counts.
    pieces: usize,
}

impl Query {
    /// Decodes a raw query string (without `?`).
    pub fn parse(raw: &str) -> Query {
        Query {
            pairs: url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            pieces: if raw.is_empty() {
                0
            } else {
                raw.split('&').count()
            },
        }
    }

    /// How many parameters an app that splits on `&` counts.
    pub fn pieces(&self) -> usize {
        self.pieces
    }
}

/// A parameter a rule reads, with every spelling under which the app reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parameter {
    /// As configured.
    pub name: String,
    spellings: Vec<String>,
}

impl Parameter {
    /// The parameter `name` as `parser` reads it.
    pub fn new(name: &str, parser: QueryParser) -> Parameter {
        let spellings = match parser {
            QueryParser::Plain => vec![name.to_string()],
            QueryParser::GrpcGateway => grpc_gateway_spellings(name),
        };
        Parameter {
            name: name.to_string(),
            spellings,
        }
    }

    /// Every value the app could read for this parameter, in every spelling; an error when a
    /// spelling is given in a bracket form.
    pub fn values(&self, query: &Query) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        for (key, value) in &query.pairs {
            if self.spellings.iter().any(|s| s == key) {
                values.push(value.clone());
            } else if let Some(spelling) = self.spellings.iter().find(|s| {
                key.strip_prefix(s.as_str())
                    .is_some_and(|r| r.starts_with('['))
            }) {
                return Err(format!(
                    "the query gives {spelling:?} as {key:?}, a bracket form apps read differently"
                ));
            }
        }
        Ok(values)
    }
}

/// grpc-gateway resolves each dotted part of a key by the field's proto name, then its JSON
/// name (protoc's lowerCamelCase): `a_b.c_d` is also `aB.c_d`, `a_b.cD` and `aB.cD`.
fn grpc_gateway_spellings(name: &str) -> Vec<String> {
    let mut spellings = vec![String::new()];
    for (i, part) in name.split('.').enumerate() {
        let mut choices = vec![part.to_string()];
        let json = json_name(part);
        if json != part {
            choices.push(json);
        }
        spellings = spellings
            .iter()
            .flat_map(|prefix| {
                choices.iter().map(move |c| {
                    if i == 0 {
                        c.clone()
                    } else {
                        format!("{prefix}.{c}")
                    }
                })
            })
            .collect();
    }
    spellings
}

/// protoc's `ToJsonName`: every `_` dropped and the character after it upper-cased.
fn json_name(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The value a rule's condition wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Exactly this text.
    Text(String),
    /// A protobuf enum value: its name, or its number in any spelling Go's integer parsing
    /// accepts (grpc-gateway v2 parses base 10, v1 base 0: `5`, `05`, `+5`, `0x5`, `0b101`).
    Enum {
        /// The value's name (`NAMESPACE`).
        name: String,
        /// Its number (`5`).
        number: i64,
    },
}

impl Expected {
    /// Whether the app could read `value` as this.
    pub fn accepts(&self, value: &str) -> bool {
        match self {
            Expected::Text(text) => value == text,
            Expected::Enum { name, number } => {
                value == name || go_integer_readings(value).contains(number)
            }
        }
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Text(text) => write!(f, "{text}"),
            Expected::Enum { name, number } => write!(f, "{name} (or {number})"),
        }
    }
}

/// Every number Go's `strconv.ParseInt` reads `value` as, with base 10 or base 0 (prefixes
/// `0x`, `0o`, `0b`, a leading `0` for octal, `_` between digits). Lenient on purpose: reading a
/// malformed number as the enum only makes the rule apply, the safe direction.
fn go_integer_readings(value: &str) -> Vec<i64> {
    let (negative, body) = match value.as_bytes().first() {
        Some(b'+') => (false, &value[1..]),
        Some(b'-') => (true, &value[1..]),
        _ => (false, value),
    };
    let signed = |n: i64| if negative { -n } else { n };
    let mut readings = Vec::new();
    if let Ok(n) = body.parse::<u32>()
        && !body.starts_with('+')
    {
        readings.push(signed(i64::from(n)));
    }
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    let lower = clean.to_ascii_lowercase();
    let (digits, radix) = if let Some(rest) = lower.strip_prefix("0x") {
        (rest, 16)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (rest, 2)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (rest, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    if !digits.starts_with(['+', '-'])
        && let Ok(n) = u32::from_str_radix(digits, radix)
    {
        readings.push(signed(i64::from(n)));
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_gateway_reads_proto_and_json_names_part_by_part() {
        let p = Parameter::new("resource_reference_key.id", QueryParser::GrpcGateway);
        assert_eq!(
            p.spellings,
            ["resource_reference_key.id", "resourceReferenceKey.id"]
        );
        let two = Parameter::new("a_b.c_d", QueryParser::GrpcGateway);
        assert_eq!(two.spellings, ["a_b.c_d", "a_b.cD", "aB.c_d", "aB.cD"]);
        let plain = Parameter::new("resource_reference_key.id", QueryParser::Plain);
        assert_eq!(plain.spellings, ["resource_reference_key.id"]);
    }

    #[test]
    fn values_come_from_every_spelling_and_brackets_are_refused() {
        let p = Parameter::new("resource_reference_key.id", QueryParser::GrpcGateway);
        let q = Query::parse("resource_reference_key.id=a&resourceReferenceKey.id=b&x=1");
        assert_eq!(p.values(&q).unwrap(), ["a", "b"]);
        let q = Query::parse("resource%5Freference%5Fkey.id=a");
        assert_eq!(p.values(&q).unwrap(), ["a"]);
        for bracket in [
            "resource_reference_key.id[a]=",
            "resourceReferenceKey.id[]=a",
            "resource_reference_key.id%5Ba%5D=b",
        ] {
            assert!(p.values(&Query::parse(bracket)).is_err(), "{bracket}");
        }
        let ns = Parameter::new("namespace", QueryParser::Plain);
        assert!(ns.values(&Query::parse("namespace[]=a")).is_err());
        assert!(ns.values(&Query::parse("namespace[0]=a")).is_err());
        assert_eq!(
            ns.values(&Query::parse("namespaces=a&Namespace=b"))
                .unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn pieces_count_what_express_counts() {
        assert_eq!(Query::parse("").pieces(), 0);
        assert_eq!(Query::parse("a=1").pieces(), 1);
        assert_eq!(Query::parse("a=1&&b").pieces(), 3);
        assert_eq!(Query::parse(&"x&".repeat(1000)).pieces(), 1001);
    }

    #[test]
    fn an_enum_condition_accepts_every_spelling_of_its_number() {
        let ns = Expected::Enum {
            name: "NAMESPACE".into(),
            number: 5,
        };
        for yes in [
            "NAMESPACE",
            "5",
            "05",
            "+5",
            "005",
            "0x5",
            "0X05",
            "0b101",
            "0o5",
            "0_5",
        ] {
            assert!(ns.accepts(yes), "{yes}");
        }
        for no in [
            "namespace",
            "EXPERIMENT",
            "1",
            "-5",
            "50",
            "5.0",
            "",
            " 5",
            "0x",
            "++5",
            "+-5",
        ] {
            assert!(!ns.accepts(no), "{no}");
        }
        assert!(Expected::Text("a".into()).accepts("a"));
        assert!(!Expected::Text("a".into()).accepts("A"));
    }
}
