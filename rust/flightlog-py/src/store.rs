//! `flightlog._core.ObjectStore`: the core's object-store root for the Python
//! layer (manifests, run-id claims, listing). Conversion only; every call
//! releases the GIL while it waits on the network.

use std::sync::Arc;

use flightlog_core::{ObjectRoot, PutKind};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::error::{guard, to_py};

/// A bucket opened with the `AWS_*` environment and explicit options.
#[pyclass(frozen, module = "flightlog._core", name = "ObjectStore")]
pub struct PyObjectStore {
    pub(crate) root: Arc<ObjectRoot>,
    prefix: String,
}

fn info_dict<'py>(
    py: Python<'py>,
    info: &flightlog_core::object_root::ObjectInfo,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", &info.key)?;
    d.set_item("size", info.size)?;
    d.set_item("last_modified_ms", info.last_modified_ms)?;
    d.set_item("e_tag", &info.e_tag)?;
    Ok(d)
}

#[pymethods]
impl PyObjectStore {
    #[new]
    #[pyo3(signature = (url, options=None))]
    fn new(py: Python<'_>, url: &str, options: Option<Vec<(String, String)>>) -> PyResult<Self> {
        let options = options.unwrap_or_default();
        let (root, prefix) =
            py.detach(|| guard(|| ObjectRoot::open_s3(url, &options).map_err(to_py)))?;
        Ok(PyObjectStore { root, prefix })
    }

    /// The key prefix of the URL the store was opened with.
    #[getter]
    fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `s3://bucket/key`.
    fn url(&self, key: &str) -> String {
        self.root.url(key)
    }

    /// Puts `data` at `key`: `mode="create"` only if absent (FileExistsError
    /// otherwise), `"update"` only if the object still has `e_tag`
    /// (ConflictError otherwise), `"overwrite"` unconditionally. Returns the new ETag.
    #[pyo3(signature = (key, data, mode="create", e_tag=None))]
    fn put(
        &self,
        py: Python<'_>,
        key: &str,
        data: Vec<u8>,
        mode: &str,
        e_tag: Option<String>,
    ) -> PyResult<Option<String>> {
        let kind = match (mode, e_tag) {
            ("create", None) => PutKind::Create,
            ("overwrite", None) => PutKind::Overwrite,
            ("update", Some(tag)) => PutKind::Update(tag),
            ("update", None) => return Err(PyValueError::new_err("mode='update' needs e_tag=")),
            ("create" | "overwrite", Some(_)) => {
                return Err(PyValueError::new_err(
                    "e_tag= is only used with mode='update'",
                ))
            }
            (other, _) => {
                return Err(PyValueError::new_err(format!(
                    "mode must be 'create', 'update' or 'overwrite', got {other:?}"
                )))
            }
        };
        py.detach(|| guard(|| self.root.put(key, data, kind).map_err(to_py)))
    }

    /// `(data, e_tag)` of `key`, or `None` if it does not exist.
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: &str,
    ) -> PyResult<Option<(Bound<'py, PyBytes>, Option<String>)>> {
        let got = py.detach(|| guard(|| self.root.get(key).map_err(to_py)))?;
        Ok(got.map(|(bytes, tag)| (PyBytes::new(py, &bytes), tag)))
    }

    /// `{key, size, last_modified_ms, e_tag}` of `key`, or `None`.
    fn head<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        let info = py.detach(|| guard(|| self.root.head(key).map_err(to_py)))?;
        info.map(|i| info_dict(py, &i)).transpose()
    }

    /// Every object below `prefix` (recursively), sorted by key, as dicts like `head()`'s.
    fn list<'py>(&self, py: Python<'py>, prefix: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let listed = py.detach(|| guard(|| self.root.list(prefix).map_err(to_py)))?;
        listed.iter().map(|i| info_dict(py, i)).collect()
    }

    /// Names of the objects directly below `dir`, sorted.
    fn list_names(&self, py: Python<'_>, dir: &str) -> PyResult<Vec<String>> {
        py.detach(|| guard(|| self.root.list_names(dir).map_err(to_py)))
    }

    /// Deletes `key` (a missing object is not an error).
    fn delete(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        py.detach(|| guard(|| self.root.delete(key).map_err(to_py)))
    }

    fn __repr__(&self) -> String {
        format!("ObjectStore({:?})", self.root.url(&self.prefix))
    }
}
