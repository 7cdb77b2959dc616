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
//!   `strconv.Atoi` also `05`, `+5`, and `4294967301`, which v1 truncates to 32 bits): a
//!   condition on an enum accepts every spelling.

use crate::config::QueryParser;

pub use crate::config::DEFAULT_MAX_QUERY_PARAMETERS;

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
    /// Per dotted part, the names it may be given by (compared part by part, so a name of many
    /// parts costs no more than its length).
    parts: Vec<Vec<String>>,
}

impl Parameter {
    /// The parameter `name` as `parser` reads it.
    pub fn new(name: &str, parser: QueryParser) -> Parameter {
        let parts = match parser {
            QueryParser::Plain => vec![vec![name.to_string()]],
            // grpc-gateway resolves each dotted part by the field's proto name, then its JSON
            // name (protoc's lowerCamelCase): `a_b.c_d` is also `aB.c_d`, `a_b.cD` and `aB.cD`.
            QueryParser::GrpcGateway => name
                .split('.')
                .map(|part| {
                    let json = json_name(part);
                    if json == part {
                        vec![part.to_string()]
                    } else {
                        vec![part.to_string(), json]
                    }
                })
                .collect(),
        };
        Parameter {
            name: name.to_string(),
            parts,
        }
    }

    /// Whether the app reads `key` as this parameter.
    fn is_spelling(&self, key: &str) -> bool {
        if self.parts.len() == 1 {
            return self.parts[0].iter().any(|n| n == key);
        }
        let mut pieces = key.split('.');
        self.parts
            .iter()
            .all(|names| pieces.next().is_some_and(|p| names.iter().any(|n| n == p)))
            && pieces.next().is_none()
    }

    /// Whether `key` names this parameter in a bracket form: `name[…]` (Express's `qs`,
    /// grpc-gateway's `key[value]`) or `[name]…` (`qs` reads a leading bracket as the key).
    fn is_bracket_form(&self, key: &str) -> bool {
        if let Some(inner) = key.strip_prefix('[')
            && let Some((name, _)) = inner.split_once(']')
            && self.is_spelling(name)
        {
            return true;
        }
        key.find('[').is_some_and(|i| self.is_spelling(&key[..i]))
    }

    /// Every value the app could read for this parameter, in every spelling; an error when a
    /// spelling is given in a bracket form.
    pub fn values(&self, query: &Query) -> Result<Vec<String>, String> {
        let mut values = Vec::new();
        for (key, value) in &query.pairs {
            if self.is_spelling(key) {
                values.push(value.clone());
            } else if self.is_bracket_form(key) {
                return Err(format!(
                    "the query gives {:?} as {key:?}, a bracket form apps read differently",
                    self.name
                ));
            }
        }
        Ok(values)
    }
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
    /// accepts (`5`, `05`, `+5`, equal modulo 2^32; leniently also `0x5`, `0b101`).
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
            // grpc-gateway v1 compares `int32(Atoi(value))`: 4294967301 is 5 too.
            Expected::Enum { name, number } => {
                value == name
                    || go_integer_readings(value)
                        .iter()
                        .any(|n| *n as i32 == *number as i32)
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

/// Every number Go could read `value` as: `strconv.Atoi` (grpc-gateway's enums: base 10,
/// 64 bits, an optional sign, leading zeros), and leniently also base 0 (`0x`, `0o`, `0b`, a
/// leading `0` for octal, `_` between digits). Reading a malformed number as the enum only
/// makes the rule apply, the safe direction.
fn go_integer_readings(value: &str) -> Vec<i64> {
    let mut readings = Vec::new();
    if let Ok(n) = value.parse::<i64>() {
        readings.push(n);
    }
    let (negative, body) = match value.as_bytes().first() {
        Some(b'+') => (false, &value[1..]),
        Some(b'-') => (true, &value[1..]),
        _ => (false, value),
    };
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
        && let Ok(n) = i64::from_str_radix(digits, radix)
    {
        readings.push(if negative { n.wrapping_neg() } else { n });
    }
    readings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_gateway_reads_proto_and_json_names_part_by_part() {
        let p = Parameter::new("resource_reference_key.id", QueryParser::GrpcGateway);
        for yes in ["resource_reference_key.id", "resourceReferenceKey.id"] {
            assert!(p.is_spelling(yes), "{yes}");
        }
        for no in [
            "resourcereferencekey.id",
            "resource_reference_key",
            "resource_reference_key.id.x",
            "id",
        ] {
            assert!(!p.is_spelling(no), "{no}");
        }
        let two = Parameter::new("a_b.c_d", QueryParser::GrpcGateway);
        for yes in ["a_b.c_d", "a_b.cD", "aB.c_d", "aB.cD"] {
            assert!(two.is_spelling(yes), "{yes}");
        }
        let plain = Parameter::new("resource_reference_key.id", QueryParser::Plain);
        assert!(plain.is_spelling("resource_reference_key.id"));
        assert!(!plain.is_spelling("resourceReferenceKey.id"));
        // Many parts cost their length, not 2^parts.
        let long = Parameter::new(&["a_b"; 64].join("."), QueryParser::GrpcGateway);
        assert!(long.is_spelling(&["aB"; 64].join(".")));
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
        assert!(
            ns.values(&Query::parse("namespace=a&[namespace]=b"))
                .is_err()
        );
        assert!(ns.values(&Query::parse("%5Bnamespace%5D=b")).is_err());
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
            "4294967301",
            "-4294967291",
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
