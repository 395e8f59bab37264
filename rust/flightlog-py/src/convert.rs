//! Python values → ring words, per field dtype. Every rejection names the
//! field; nothing is pushed until a whole row converted.

use flightlog_core::dict::Dictionary;
use flightlog_core::row_layout::{f32_word, f64_word, i64_word};
use flightlog_core::{DType, Value};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyFloat, PyInt, PyString};

use crate::error::{to_py, wrong_type};

/// One field as the converters see it.
pub struct FieldConv<'a> {
    pub name: &'a str,
    pub dtype: &'a DType,
    pub dictionary: Option<&'a Dictionary>,
}

/// True for numpy's bool scalar (`numpy.bool` / `numpy.bool_`), recognised
/// without importing numpy.
fn is_numpy_bool(value: &Bound<'_, PyAny>) -> bool {
    let ty = value.get_type();
    let Ok(module) = ty.module() else {
        return false;
    };
    let Ok(name) = ty.name() else { return false };
    module.to_str().is_ok_and(|m| m == "numpy")
        && name.to_str().is_ok_and(|n| n == "bool" || n == "bool_")
}

/// True for numpy's `datetime64` and `timedelta64` scalars: they have
/// `__float__`/`__int__`, but a time is not a number of any unit we could
/// guess, so f64 and i64 fields refuse them (as `extend()` refuses their arrays).
fn is_numpy_time(value: &Bound<'_, PyAny>) -> bool {
    let ty = value.get_type();
    let Ok(module) = ty.module() else {
        return false;
    };
    let Ok(name) = ty.name() else { return false };
    module.to_str().is_ok_and(|m| m == "numpy")
        && name
            .to_str()
            .is_ok_and(|n| n == "datetime64" || n == "timedelta64")
}

fn time_error(f: &FieldConv<'_>, value: &Bound<'_, PyAny>) -> PyErr {
    let e = wrong_type(f.name, "a number, not a time", value);
    PyTypeError::new_err(format!(
        "{}; convert it to a number first, e.g. t / np.timedelta64(1, 'ms')",
        e.value(value.py())
    ))
}

/// Converts a non-None value to its ring word.
#[inline]
pub fn to_word(f: &FieldConv<'_>, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    match f.dtype {
        DType::F64 => {
            // float and its subclasses (numpy.float64): the double, no call.
            if let Ok(x) = value.cast::<PyFloat>() {
                return Ok(f64_word(x.value()));
            }
            Ok(f64_word(to_f64(f, value)?))
        }
        DType::F32 => Ok(f32_word(to_f64(f, value)? as f32)),
        DType::I64 => {
            // Exact ints first: the common case pays for no other check.
            if let Ok(i) = value.cast_exact::<PyInt>() {
                if let Ok(v) = i.extract::<i64>() {
                    return Ok(i64_word(v));
                }
            }
            if value.is_instance_of::<PyBool>() || is_numpy_bool(value) {
                return Err(wrong_type(f.name, "an int (i64)", value));
            }
            if value.is_instance_of::<PyFloat>() {
                return Err(wrong_type(f.name, "an int (i64), not a float", value));
            }
            if is_numpy_time(value) {
                return Err(time_error(f, value));
            }
            match value.extract::<i64>() {
                Ok(v) => Ok(i64_word(v)),
                Err(e) if e.is_instance_of::<PyOverflowError>(value.py()) => {
                    Err(PyOverflowError::new_err(format!(
                        "field '{}': {} does not fit in a 64-bit integer",
                        f.name,
                        value.repr().map(|r| r.to_string()).unwrap_or_default()
                    )))
                }
                // Not an int. An error raised inside the value's own
                // `__index__` (a KeyboardInterrupt among them) is its own.
                Err(e) if e.is_instance_of::<PyTypeError>(value.py()) => {
                    Err(wrong_type(f.name, "an int (i64)", value))
                }
                Err(e) => Err(e),
            }
        }
        DType::Bool => {
            if let Ok(b) = value.cast_exact::<PyBool>() {
                return Ok(b.is_true() as u64);
            }
            if is_numpy_bool(value) {
                return Ok(value.is_truthy()? as u64);
            }
            Err(wrong_type(f.name, "a bool", value))
        }
        DType::Str | DType::Enum(_) => {
            let Ok(s) = value.cast::<PyString>() else {
                return Err(wrong_type(f.name, "a str", value));
            };
            let text = s.to_str().map_err(|_| {
                PyValueError::new_err(format!(
                    "field '{}': the string is not valid UTF-8 (lone surrogates?)",
                    f.name
                ))
            })?;
            let dict = f.dictionary.expect("string fields have a dictionary");
            Ok(dict.code(text).map_err(to_py)? as u32 as u64)
        }
    }
}

fn to_f64(f: &FieldConv<'_>, value: &Bound<'_, PyAny>) -> PyResult<f64> {
    if let Ok(x) = value.cast::<PyFloat>() {
        return Ok(x.value());
    }
    if value.is_instance_of::<PyBool>() || is_numpy_bool(value) {
        return Err(wrong_type(f.name, "a float, not a bool", value));
    }
    if value.is_instance_of::<PyString>() {
        return Err(wrong_type(f.name, "a float", value));
    }
    if let Ok(i) = value.cast::<PyInt>() {
        // Ints convert exactly when they can; huge ones round like float(x).
        return i
            .extract::<f64>()
            .map_err(|_| wrong_type(f.name, "a float", value));
    }
    if is_numpy_time(value) {
        return Err(time_error(f, value));
    }
    value.extract::<f64>().map_err(|e| {
        // As for ints: what the value's own `__float__` raised stays.
        if e.is_instance_of::<PyTypeError>(value.py()) {
            wrong_type(f.name, "a float (or an object with __float__)", value)
        } else {
            e
        }
    })
}

/// The dtype a value implies, for schema inference from the first `log()`.
pub fn infer_dtype(name: &str, value: &Bound<'_, PyAny>) -> PyResult<DType> {
    if value.is_none() {
        return Err(crate::error::SchemaError::new_err(format!(
            "cannot infer the type of field '{name}' from None: pass a Schema"
        )));
    }
    if value.is_instance_of::<PyBool>() || is_numpy_bool(value) {
        return Ok(DType::Bool);
    }
    if value.is_instance_of::<PyInt>() {
        return Ok(DType::I64);
    }
    if value.is_instance_of::<PyFloat>() {
        return Ok(DType::F64);
    }
    if value.is_instance_of::<PyString>() {
        return Ok(DType::Str);
    }
    if value.hasattr("__index__")? {
        return Ok(DType::I64);
    }
    if value.hasattr("__float__")? {
        return Ok(DType::F64);
    }
    Err(crate::error::SchemaError::new_err(format!(
        "cannot infer the type of field '{name}' from {}: use int, float, bool or str, or pass a Schema",
        value.get_type().name()?
    )))
}

/// Converts a Python value into a constant column value for `dtype`.
pub fn to_constant(name: &str, dtype: &DType, value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if value.is_none() {
        return Err(PyValueError::new_err(format!(
            "constant column '{name}' cannot be None"
        )));
    }
    let f = FieldConv {
        name,
        dtype,
        dictionary: None,
    };
    Ok(match dtype {
        DType::F64 | DType::F32 => Value::F64(to_f64(&f, value)?),
        DType::I64 => Value::I64(to_word(&f, value)? as i64),
        DType::Bool => Value::Bool(to_word(&f, value)? != 0),
        DType::Str | DType::Enum(_) => Value::Str(
            value
                .cast::<PyString>()
                .map_err(|_| wrong_type(name, "a str", value))?
                .to_str()?
                .to_owned(),
        ),
    })
}
