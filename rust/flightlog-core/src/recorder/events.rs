//! Events: the queued rows, the events files' schema and properties, and
//! their batches.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema, SchemaRef};

use super::Shared;
use crate::error::Result;
use crate::parquet_io;
use crate::spool;

#[derive(Debug, Clone)]
pub(super) struct EventRow {
    pub(super) t_wall_ms: f64,
    pub(super) iter: Option<i64>,
    pub(super) name: String,
    pub(super) payload: Option<String>,
}

impl EventRow {
    /// The event as the spool keeps it.
    pub(super) fn spooled(&self) -> crate::spool::SpooledEvent {
        crate::spool::SpooledEvent {
            t_wall_ms: self.t_wall_ms,
            iter: self.iter,
            name: self.name.clone(),
            payload: self.payload.clone(),
        }
    }
}

/// Arrow schema of events files.
pub fn events_arrow_schema() -> SchemaRef {
    Arc::new(ArrowSchema::new(vec![
        ArrowField::new("run_id", DataType::Utf8, true),
        ArrowField::new("t_wall_ms", DataType::Float64, false),
        ArrowField::new("iter", DataType::Int64, true),
        ArrowField::new("event", DataType::Utf8, false),
        ArrowField::new("payload", DataType::Utf8, true),
    ]))
}

/// `events_upto`: the events in published files once this one is (their
/// sequence numbers are below it; see [`spool::EVENTS_UPTO_KEY`]).
pub(super) fn events_props(
    shared: &Shared,
    events_upto: u64,
) -> parquet::file::properties::WriterProperties {
    let upto = (spool::EVENTS_UPTO_KEY.to_string(), events_upto.to_string());
    parquet_io::writer_properties(
        &["run_id", "event"],
        shared.config.compression,
        1 << 20,
        parquet_io::key_values(shared.file_kv.iter().cloned().chain([upto])),
    )
}

pub(super) fn build_events_batch(run_id: Option<&str>, events: &[EventRow]) -> Result<RecordBatch> {
    let n = events.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(Float64Array::from_iter_values(
            events.iter().map(|e| e.t_wall_ms),
        )),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.iter))),
        Arc::new(StringArray::from_iter_values(
            events.iter().map(|e| e.name.as_str()),
        )),
        Arc::new(StringArray::from_iter(
            events.iter().map(|e| e.payload.as_deref()),
        )),
    ];
    Ok(RecordBatch::try_new(events_arrow_schema(), columns)?)
}
