//! Fuzzes `process_apis::partners::records::read`, the streaming reader of
//! partners' order files (`POST /partner/v1/order-batches`, the inbox,
//! `erp-connect import orders`): byte 0 picks CSV (header row, `,` or `;`)
//! or JSON lines, the rest is the file. The iterator is drained.
//!
//! Beyond "never panics": the reader ends (at most one item per line
//! ending, plus the header error), and a CSV record never holds an empty
//! or untrimmed value (the reader trims and drops them, so the mapping
//! never sees `" 2 "` or `""` for a field).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use process_apis::partners::records::{Format, read};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, file)) = data.split_first() else { return };
    let format = if selector % 2 == 0 { Format::Csv } else { Format::JsonLines };
    // `read` takes an owned reader ('static), as the upload stream is.
    let records = read(Cursor::new(file.to_vec()), format);
    // A line is at most one record (the csv crate also ends a line at a
    // lone `\r`; a quoted field may span lines), so this bound only
    // catches a reader that never ends.
    let bound = file.iter().filter(|b| matches!(b, b'\n' | b'\r')).count() + 2;
    let mut count = 0;
    for record in records {
        count += 1;
        assert!(count <= bound, "more records than lines: the reader does not end");
        let Ok(fields) = record else { continue };
        if format == Format::Csv {
            assert!(fields.values().all(|v| !v.is_empty()), "empty CSV values are dropped: {fields:?}");
            assert!(fields.values().all(|v| v.trim() == v), "CSV values are trimmed: {fields:?}");
        }
    }
});
