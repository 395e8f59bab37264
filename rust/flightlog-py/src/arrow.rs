//! Durable data handed to Python through the Arrow PyCapsule interface.

use std::sync::Arc;

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::{Schema, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::error::WriteError;

/// Record batches with their schema. Every `__arrow_c_stream__` call makes a
/// fresh stream over the same shared batches, so consumers that scan twice
/// (DuckDB does) work.
#[pyclass(frozen, module = "flightlog._core", name = "ArrowData")]
pub struct ArrowData {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
}

impl ArrowData {
    /// One batch.
    pub fn from_batch(schema: SchemaRef, batch: RecordBatch) -> Self {
        ArrowData {
            schema,
            batches: Arc::new(vec![batch]),
        }
    }

    /// Joins the batches of several files (same columns). Schema-level
    /// metadata differs between a merged file and its segments, so it is
    /// dropped; `fallback` is used when there is no file yet.
    pub fn from_parts(
        parts: Vec<(SchemaRef, Vec<RecordBatch>)>,
        fallback: Option<SchemaRef>,
    ) -> PyResult<Self> {
        let schema = parts
            .first()
            .map(|(s, _)| s.clone())
            .or(fallback)
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let schema = Arc::new(Schema::new(schema.fields().clone()));
        let mut batches = Vec::new();
        for (s, bs) in parts {
            if s.fields() != schema.fields() {
                return Err(WriteError::new_err(
                    "durable files of this recording have different columns",
                ));
            }
            for b in bs {
                batches.push(
                    RecordBatch::try_new(schema.clone(), b.columns().to_vec())
                        .map_err(|e| WriteError::new_err(e.to_string()))?,
                );
            }
        }
        Ok(ArrowData {
            schema,
            batches: Arc::new(batches),
        })
    }
}

#[pymethods]
impl ArrowData {
    /// Arrow PyCapsule interface: a new stream each call.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        // The request is best-effort per the spec; we always export our schema.
        let _ = requested_schema;
        let batches: Vec<RecordBatch> = self.batches.as_ref().clone();
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), self.schema.clone());
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    /// Rows in all batches.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Column names.
    #[getter]
    fn column_names(&self) -> Vec<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }

    fn __len__(&self) -> usize {
        self.num_rows()
    }

    fn __repr__(&self) -> String {
        format!(
            "ArrowData({} rows, columns={:?})",
            self.num_rows(),
            self.column_names()
        )
    }
}
