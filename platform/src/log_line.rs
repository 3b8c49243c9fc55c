//! The JSON log line, written field by field.
//!
//! `tracing-subscriber`'s own JSON format collects each event's fields into
//! a map of `serde_json::Value`s (a `String` per `Debug` field) and each
//! span's fields likewise, then serialises the lot: a dozen allocations
//! for every request's log line and every `#[instrument]`ed handler, which
//! cost the order read about an eighth of its throughput at `info`. Here
//! the same line is written straight into the subscriber's per-thread
//! buffer: no map, no intermediate values, one line per `write(2)`.
//!
//! The shape is the one `tracing-subscriber`'s `json().flatten_event(true)`
//! writes, so that what reads our logs keeps working: `timestamp`,
//! `level`, the event's fields (`message` among them) at the top level,
//! `target`, then the current `span` and the list of `spans` from the
//! root, each with its fields and `name`. A traced line starts with its
//! `trace_id` and `span_id` ([`crate::telemetry`]).

use std::fmt::{self, Write as _};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::{LookupSpan, SpanRef},
};

/// The event format: one JSON object per line.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLine;

/// The span fields' format: `"key":value` pairs, comma-separated, kept
/// with each span and copied into the lines written inside it.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonFields;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        writer.write_char('{')?;
        if let Some((trace_id, span_id)) = crate::telemetry::current_ids() {
            write!(writer, "\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",")?;
        }
        writer.write_str("\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut fields = Fields { out: &mut writer, first: false, result: Ok(()) };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, event.metadata().target())?;
        if let Some(scope) = ctx.event_scope() {
            let mut leaf = None;
            for span in scope.from_root() {
                writer.write_str(if leaf.is_none() { ",\"spans\":[" } else { "," })?;
                span_object::<_, N>(&mut writer, &span)?;
                leaf = Some(span);
            }
            if let Some(leaf) = leaf {
                writer.write_str("],\"span\":")?;
                span_object::<_, N>(&mut writer, &leaf)?;
            }
        }
        writer.write_str("}\n")
    }
}

/// `{fields...,"name":"..."}` of one span.
fn span_object<S, N>(writer: &mut Writer<'_>, span: &SpanRef<'_, S>) -> fmt::Result
where
    S: for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    writer.write_char('{')?;
    if let Some(fields) = span.extensions().get::<FormattedFields<N>>().filter(|f| !f.fields.is_empty()) {
        writer.write_str(&fields.fields)?;
        writer.write_char(',')?;
    }
    writer.write_str("\"name\":")?;
    string(writer, span.name())?;
    writer.write_char('}')
}

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Fields { out: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut visitor = Fields { out: &mut current.fields, first, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes each field as `,"name":value` (without the comma before the
/// first when `first`).
struct Fields<'a, W: fmt::Write> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        if !std::mem::take(&mut self.first) {
            self.out.write_char(',')?;
        }
        string(self.out, field.name())?;
        self.out.write_char(':')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.out));
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |out| string(out, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity.
        self.put(field, |out| if value.is_finite() { write!(out, "{value}") } else { out.write_str("null") });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value}")?;
            out.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `value` as a JSON string.
fn string(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(value)?;
    out.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::{fmt::MakeWriter, layer::SubscriberExt};

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// The lines `log` writes, each parsed.
    fn lines(log: impl FnOnce()) -> Vec<Value> {
        let lines = Lines::default();
        let layer =
            tracing_subscriber::fmt::layer().event_format(JsonLine).fmt_fields(JsonFields).with_writer(lines.clone());
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), log);
        let text = String::from_utf8(lines.0.lock().expect("not poisoned").clone()).expect("utf-8");
        text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))).collect()
    }

    #[test]
    fn a_line_is_the_json_object_tracing_subscriber_writes() {
        let written = lines(|| {
            tracing::info!(target: "http", method = %"GET", status = 200u16, duration_ms = 0.25, ok = true, "request");
        });
        let [line] = written.as_slice() else { panic!("one line: {written:?}") };
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "http");
        assert_eq!(line["message"], "request");
        assert_eq!((line["method"].as_str(), line["status"].as_u64()), (Some("GET"), Some(200)));
        assert_eq!((line["duration_ms"].as_f64(), line["ok"].as_bool()), (Some(0.25), Some(true)));
        let timestamp = line["timestamp"].as_str().expect("a timestamp");
        assert!(timestamp.ends_with('Z') && timestamp.contains('T'), "RFC 3339 in UTC: {timestamp}");
        assert!(line.get("span").is_none(), "outside any span: {line}");
    }

    #[test]
    fn anything_a_field_holds_stays_one_valid_line() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é 🦀";
        let error = std::io::Error::other("disk \"full\"\n");
        let written = lines(|| {
            tracing::warn!(text = nasty, debug = ?nasty, error = &error as &dyn std::error::Error, nan = f64::NAN, "{nasty}");
        });
        let [line] = written.as_slice() else { panic!("one line: {written:?}") };
        assert_eq!(line["text"], nasty);
        assert_eq!(line["debug"].as_str(), Some(format!("{nasty:?}").as_str()));
        assert_eq!(line["error"], "disk \"full\"\n");
        assert_eq!(line["message"], nasty);
        assert!(line["nan"].is_null());
    }

    #[test]
    fn lines_inside_spans_carry_their_fields_from_the_root() {
        let written = lines(|| {
            let outer = tracing::info_span!("handler", tenant = "acme", order_id = tracing::field::Empty);
            let _outer = outer.enter();
            outer.record("order_id", "ord_1");
            let inner = tracing::info_span!("step");
            let _inner = inner.enter();
            tracing::info!("inside");
        });
        let [line] = written.as_slice() else { panic!("one line: {written:?}") };
        assert_eq!(line["span"], serde_json::json!({"name": "step"}));
        assert_eq!(
            line["spans"],
            serde_json::json!([{"name": "handler", "tenant": "acme", "order_id": "ord_1"}, {"name": "step"}])
        );
    }
}
