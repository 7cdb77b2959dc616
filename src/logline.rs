//! The JSON log line: one object per event, written in one pass into the line buffer.
//!
//! The shape is tracing-subscriber's `json().flatten_event(true)` (`timestamp`, `level`, the
//! event's fields, `target`), so log pipelines see the same keys. It exists because that
//! formatter serializes through an adaptor that re-checks every small fragment for UTF-8 and
//! goes through `serde` per field: on the decision path it cost about as much as the decision
//! itself (a `perf` call graph of the cached-token Check; numbers in BENCHMARKS.md).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter (`tracing_subscriber::fmt().event_format(JsonLine)`).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let fill = |line: &mut String| {
            let meta = event.metadata();
            let _ = write!(
                line,
                "{{\"timestamp\":\"{}\",\"level\":\"{}\"",
                humantime::format_rfc3339_micros(SystemTime::now()),
                meta.level()
            );
            event.record(&mut Fields(line));
            line.push_str(",\"target\":");
            push_json_string(line, meta.target());
            line.push_str("}\n");
        };
        // One buffer per thread, reused: a line per decision costs no allocation. A value whose
        // formatting logs (re-entering here), or an event at a thread's exit (its locals gone),
        // gets a buffer of its own.
        let written = LINE.try_with(|buffer| {
            let mut line = buffer.try_borrow_mut().ok()?;
            line.clear();
            fill(&mut line);
            let result = writer.write_str(&line);
            // A huge line (a long error chain) does not stay with the thread.
            if line.capacity() > 64 * 1024 {
                *line = String::with_capacity(1024);
            }
            Some(result)
        });
        match written {
            Ok(Some(result)) => result,
            _ => {
                let mut line = String::new();
                fill(&mut line);
                writer.write_str(&line)
            }
        }
    }
}

thread_local! {
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(1024));
}

/// Writes each field as `,"name":value`.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &Field) {
        self.0.push(',');
        push_json_string(self.0, field.name());
        self.0.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        push_json_string(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.0.push('"');
        let _ = write!(Escaped(self.0), "{value:?}");
        self.0.push('"');
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.0, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.0, "{value}");
        } else {
            // JSON has no NaN or infinity.
            self.0.push_str("null");
        }
    }

    /// An error with its causes, outermost first: `cannot reach the Kubernetes API: tcp
    /// connect error: Connection refused`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.key(field);
        self.0.push('"');
        let _ = write!(Escaped(self.0), "{value}");
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(Escaped(self.0), ": {cause}");
            source = cause.source();
        }
        self.0.push('"');
    }
}

/// `value` as a JSON string literal.
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    let _ = Escaped(out).write_str(value);
    out.push('"');
}

/// A `fmt::Write` that escapes what it is given for the inside of a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        // Bytes, not chars: every byte that needs escaping is ASCII, so `at` is a char boundary.
        while let Some(at) = rest
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || b < b' ')
        {
            self.0.push_str(&rest[..at]);
            match rest.as_bytes()[at] {
                b'"' => self.0.push_str("\\\""),
                b'\\' => self.0.push_str("\\\\"),
                b'\n' => self.0.push_str("\\n"),
                b'\r' => self.0.push_str("\\r"),
                b'\t' => self.0.push_str("\\t"),
                b => {
                    let _ = write!(self.0, "\\u{b:04x}");
                }
            }
            rest = &rest[at + 1..];
        }
        self.0.push_str(rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines_of(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = capture.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn every_field_type_makes_valid_json_with_the_usual_keys() {
        let ip: Option<std::net::IpAddr> = Some([10, 0, 0, 1].into());
        let error = std::io::Error::other("broken \"pipe\"");
        let lines = lines_of(|| {
            tracing::info!(
                target: "authgate::decision",
                user = "alice \"the admin\"\\\n\u{1}",
                status = 403u64,
                delta = -3i64,
                ok = true,
                ratio = 0.5f64,
                nan = f64::NAN,
                client_ip = ?ip,
                path = %"/a/ü",
                error = &error as &(dyn std::error::Error + 'static),
                "decision"
            );
        });
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["target"], "authgate::decision");
        assert_eq!(l["message"], "decision");
        assert_eq!(l["user"], "alice \"the admin\"\\\n\u{1}");
        assert_eq!(l["status"], 403);
        assert_eq!(l["delta"], -3);
        assert_eq!(l["ok"], true);
        assert_eq!(l["ratio"], 0.5);
        assert!(l["nan"].is_null());
        assert_eq!(l["client_ip"], "Some(10.0.0.1)");
        assert_eq!(l["path"], "/a/ü");
        assert_eq!(l["error"], "broken \"pipe\"");
        let ts = l["timestamp"].as_str().unwrap();
        humantime::parse_rfc3339(ts).unwrap_or_else(|e| panic!("{ts}: {e}"));
    }

    proptest::proptest! {
        // Hosts, paths and user names come from the network: any string must stay one valid
        // JSON string (no line break can split a log line).
        #[test]
        fn any_string_round_trips_on_one_line(s in "\\PC*|[\\x00-\\x7f]*") {
            let mut out = String::new();
            push_json_string(&mut out, &s);
            proptest::prop_assert!(!out.contains('\n'));
            let back: String = serde_json::from_str(&out).unwrap();
            proptest::prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn escapes_match_serde_json() {
        for s in [
            "",
            "plain",
            "\"",
            "\\",
            "\u{0}\u{1f}\u{7f}",
            "tab\there",
            "ü€😀",
            "a\"b\\c\nd",
        ] {
            let mut ours = String::new();
            push_json_string(&mut ours, s);
            let back: String = serde_json::from_str(&ours).unwrap();
            assert_eq!(back, s);
        }
    }
}
