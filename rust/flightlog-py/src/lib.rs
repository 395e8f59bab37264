//! `flightlog._core`: the PyO3 bindings of flightlog-core. Only argument
//! conversion, exception mapping and GIL release live here.
#![deny(unsafe_code)]

mod arrow;
mod columns;
mod convert;
mod error;
mod fastcall;
mod functions;
mod recorder;
mod store;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<recorder::PyRecorder>()?;
    m.add_class::<arrow::ArrowData>()?;
    m.add_class::<store::PyObjectStore>()?;
    functions::register(m)?;
    fastcall::detect_int_layout(m.py())?;
    // For the tests: whether `record()` reads ints in place here (CPython
    // 3.11's layout detected), so that a detection that silently failed shows.
    m.add("_ints_in_place", fastcall::ints_in_place())?;
    Ok(())
}
