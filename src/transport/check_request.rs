//! A lean view of `envoy.service.auth.v3.CheckRequest`: only the fields the decision reads, with
//! the field numbers and types of Envoy's `attribute_context.proto` (checked against envoy-types'
//! generated messages in the tests below and in the `grpc_to_request` fuzz target).
//!
//! Decoding a message skips every field its type does not name without allocating, so the
//! destination peer, the request id and time, the protocol, the body, TLS session, filter and
//! route metadata and context extensions (Istio fills several) cost nothing. The `headers` map
//! is decoded as its wire form, a list of entries, instead of a SipHash `HashMap` (proto3 gives
//! a repeated key the last value; [`HttpRequest::merged_headers`] does the same), and its keys
//! and values as views of the received buffer, not a copy each.

use prost::Message;

/// `CheckRequest`: only `attributes` (field 1).
#[derive(Clone, PartialEq, Message)]
pub struct CheckRequest {
    /// `attributes`.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

/// `AttributeContext`: `source` (1) and `request` (4).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeContext {
    /// `source`: the downstream peer.
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    /// `request`.
    #[prost(message, optional, tag = "4")]
    pub request: Option<AttributeRequest>,
}

/// `AttributeContext.Peer`: `address` (1).
#[derive(Clone, PartialEq, Message)]
pub struct Peer {
    /// `address`.
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
}

/// `envoy.config.core.v3.Address`: the whole `address` oneof, so that a later pipe or internal
/// address replaces a socket address as it does in the full message.
#[derive(Clone, PartialEq, Message)]
pub struct Address {
    /// `socket_address` (1), `pipe` (2) or `envoy_internal_address` (3).
    #[prost(oneof = "AddressKind", tags = "1, 2, 3")]
    pub address: Option<AddressKind>,
}

/// The `Address.address` oneof.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AddressKind {
    /// `socket_address`.
    #[prost(message, tag = "1")]
    SocketAddress(SocketAddress),
    /// `pipe`: no IP address.
    #[prost(message, tag = "2")]
    Pipe(Unread),
    /// `envoy_internal_address`: no IP address.
    #[prost(message, tag = "3")]
    EnvoyInternalAddress(Unread),
}

/// `SocketAddress`: `address` (2).
#[derive(Clone, PartialEq, Message)]
pub struct SocketAddress {
    /// The IP address as text.
    #[prost(string, tag = "2")]
    pub address: String,
}

/// A message whose content authgate never reads (its fields are skipped).
#[derive(Clone, PartialEq, Message)]
pub struct Unread {}

/// `AttributeContext.Request`: `http` (2).
#[derive(Clone, PartialEq, Message)]
pub struct AttributeRequest {
    /// `http`.
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`: what the decision reads.
#[derive(Clone, PartialEq, Message)]
pub struct HttpRequest {
    /// `method` (2).
    #[prost(string, tag = "2")]
    pub method: String,
    /// `headers` (3), `map<string, string>` in its wire form; see [`Self::merged_headers`].
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<MapEntry>,
    /// `path` (4), with the query.
    #[prost(string, tag = "4")]
    pub path: String,
    /// `host` (5).
    #[prost(string, tag = "5")]
    pub host: String,
    /// `scheme` (6).
    #[prost(string, tag = "6")]
    pub scheme: String,
    /// `query` (7); Envoy leaves it empty.
    #[prost(string, tag = "7")]
    pub query: String,
    /// `header_map` (13): raw headers, when Envoy is told to send them.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// One entry of a `map<string, string>` on the wire, its key and value as views of the received
/// bytes (no copy): UTF-8 is checked where those read become text ([`super::grpc::to_request`]),
/// which refuses one that is not, as the full message would. An entry a later one replaces,
/// and every field authgate never reads, is not checked: the full message refuses more.
#[derive(Clone, PartialEq, Message)]
pub struct MapEntry {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: bytes::Bytes,
    /// The value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: bytes::Bytes,
}

/// `envoy.config.core.v3.HeaderMap`: `headers` (1).
#[derive(Clone, PartialEq, Message)]
pub struct HeaderMap {
    /// The headers, in order.
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, Message)]
pub struct HeaderValue {
    /// `key` (1).
    #[prost(string, tag = "1")]
    pub key: String,
    /// `value` (2).
    #[prost(string, tag = "2")]
    pub value: String,
    /// `raw_value` (3): the value's bytes, preferred over `value` when set.
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

/// Above this many entries a repeated key is found with a hash set, below by comparing (what
/// Envoy sends: a few dozen headers at most).
const SCAN_LIMIT: usize = 32;

impl HttpRequest {
    /// The `headers` map as proto3 reads it: one pair per key, a repeated key taking the last
    /// value. Envoy never repeats a key (it builds the map from merged headers); a repeated one
    /// must still not count twice.
    pub fn merged_headers(
        entries: Vec<MapEntry>,
    ) -> impl Iterator<Item = (bytes::Bytes, bytes::Bytes)> {
        let len = entries.len();
        let mut keep = vec![true; len];
        if len <= SCAN_LIMIT {
            for i in 0..len {
                keep[i] = !entries[i + 1..].iter().any(|e| e.key == entries[i].key);
            }
        } else {
            let mut seen = std::collections::HashSet::with_capacity(len);
            for i in (0..len).rev() {
                keep[i] = seen.insert(entries[i].key.clone());
            }
        }
        entries
            .into_iter()
            .zip(keep)
            .filter_map(|(e, keep)| keep.then_some((e.key, e.value)))
    }
}

/// Decodes a `CheckRequest`'s bytes.
pub fn decode(bytes: &[u8]) -> Result<CheckRequest, prost::DecodeError> {
    CheckRequest::decode(bytes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::service::auth::v3 as full;
    use prost::Message as _;

    use super::*;

    fn text(bytes: bytes::Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn full_request(headers: &[(&str, &str)]) -> full::CheckRequest {
        let peer = |ip: &str| full::attribute_context::Peer {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: ip.into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(443)),
                    ..Default::default()
                })),
            }),
            principal: "spiffe://cluster.local/ns/istio-system/sa/gateway".into(),
            ..Default::default()
        };
        full::CheckRequest {
            attributes: Some(full::AttributeContext {
                source: Some(peer("10.1.2.3")),
                destination: Some(peer("10.0.0.10")),
                request: Some(full::attribute_context::Request {
                    time: Some(Default::default()),
                    http: Some(full::attribute_context::HttpRequest {
                        id: "42".into(),
                        method: "GET".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        path: "/a?b=c".into(),
                        host: "kubeflow.example.com".into(),
                        scheme: "https".into(),
                        protocol: "HTTP/2".into(),
                        body: "ignored".into(),
                        ..Default::default()
                    }),
                }),
                context_extensions: HashMap::from([("k".into(), "v".into())]),
                tls_session: Some(full::attribute_context::TlsSession {
                    sni: "kubeflow.example.com".into(),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_what_the_full_message_holds() {
        let full = full_request(&[(":path", "/a?b=c"), ("cookie", "a=b"), ("x-y", "z")]);
        let lean = decode(&full.encode_to_vec()).unwrap();
        let attributes = lean.attributes.unwrap();
        let Some(AddressKind::SocketAddress(source)) = attributes
            .source
            .and_then(|p| p.address)
            .and_then(|a| a.address)
        else {
            panic!("no source address")
        };
        assert_eq!(source.address, "10.1.2.3");
        let http = attributes.request.unwrap().http.unwrap();
        let full_http = full.attributes.unwrap().request.unwrap().http.unwrap();
        assert_eq!(http.method, full_http.method);
        assert_eq!(http.path, full_http.path);
        assert_eq!(http.host, full_http.host);
        assert_eq!(http.scheme, full_http.scheme);
        let headers: HashMap<String, String> = HttpRequest::merged_headers(http.headers)
            .map(|(k, v)| (text(k), text(v)))
            .collect();
        assert_eq!(headers, full_http.headers);
    }

    #[test]
    fn a_repeated_map_key_takes_the_last_value_as_in_proto3() {
        for count in [3, SCAN_LIMIT + 5] {
            let mut bytes = Vec::new();
            let mut full = full::attribute_context::HttpRequest::default();
            for i in 0..count {
                let entry = MapEntry {
                    key: if i % 2 == 0 {
                        "x-a".into()
                    } else {
                        format!("h{i}").into()
                    },
                    value: format!("v{i}").into(),
                };
                // Field 3, length-delimited: one map entry.
                prost::encoding::message::encode(3, &entry, &mut bytes);
            }
            full.merge(bytes.as_slice()).unwrap();
            let lean = HttpRequest::decode(bytes.as_slice()).unwrap();
            let merged: Vec<(String, String)> = HttpRequest::merged_headers(lean.headers)
                .map(|(k, v)| (text(k), text(v)))
                .collect();
            assert_eq!(merged.len(), full.headers.len(), "{count}");
            let merged: HashMap<String, String> = merged.into_iter().collect();
            assert_eq!(merged, full.headers, "{count}");
        }
    }

    #[test]
    fn a_later_address_of_another_kind_replaces_the_socket_address() {
        let mut bytes = core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: "10.1.2.3".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec();
        bytes.extend(
            core::Address {
                address: Some(core::address::Address::Pipe(core::Pipe {
                    path: "/tmp/sock".into(),
                    mode: 0,
                })),
            }
            .encode_to_vec(),
        );
        let full = core::Address::decode(bytes.as_slice()).unwrap();
        assert!(matches!(
            full.address,
            Some(core::address::Address::Pipe(_))
        ));
        let lean = Address::decode(bytes.as_slice()).unwrap();
        assert!(matches!(lean.address, Some(AddressKind::Pipe(_))));
    }

    #[test]
    fn invalid_utf_8_in_a_field_it_reads_is_refused_as_by_the_full_message() {
        let mut bytes = Vec::new();
        prost::encoding::bytes::encode(5, &vec![0xff, 0xfe], &mut bytes); // host
        assert!(full::attribute_context::HttpRequest::decode(bytes.as_slice()).is_err());
        assert!(HttpRequest::decode(bytes.as_slice()).is_err());
    }
}
