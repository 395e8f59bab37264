//! numpy columns → ring words in bulk (no per-element Python calls).

use flightlog_core::layout::{f32_word, f64_word, i64_word};
use flightlog_core::DType;
use numpy::{
    Element, PyArray1, PyArrayDescrMethods, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;

fn read<T: Element + Copy>(array: &Bound<'_, PyUntypedArray>) -> PyResult<Vec<T>> {
    let typed = array.cast::<PyArray1<T>>()?;
    let ro = typed.readonly();
    // `as_array` follows the strides, so sliced and reversed views work.
    Ok(ro.as_array().iter().copied().collect())
}

/// The array's numbers as `f64`, or None for non-numeric dtypes.
fn as_f64(array: &Bound<'_, PyUntypedArray>) -> PyResult<Option<Vec<f64>>> {
    let dt = array.dtype();
    if dt.is_native_byteorder() == Some(false) {
        return Ok(None);
    }
    Ok(Some(match (dt.kind(), dt.itemsize()) {
        (b'f', 8) => read::<f64>(array)?,
        (b'f', 4) => read::<f32>(array)?.into_iter().map(f64::from).collect(),
        (b'i', 8) => read::<i64>(array)?.into_iter().map(|v| v as f64).collect(),
        (b'i', 4) => read::<i32>(array)?.into_iter().map(f64::from).collect(),
        (b'i', 2) => read::<i16>(array)?.into_iter().map(f64::from).collect(),
        (b'i', 1) => read::<i8>(array)?.into_iter().map(f64::from).collect(),
        (b'u', 8) => read::<u64>(array)?.into_iter().map(|v| v as f64).collect(),
        (b'u', 4) => read::<u32>(array)?.into_iter().map(f64::from).collect(),
        (b'u', 2) => read::<u16>(array)?.into_iter().map(f64::from).collect(),
        (b'u', 1) => read::<u8>(array)?.into_iter().map(f64::from).collect(),
        _ => return Ok(None),
    }))
}

fn as_i64(name: &str, array: &Bound<'_, PyUntypedArray>) -> PyResult<Option<Vec<i64>>> {
    let dt = array.dtype();
    if dt.is_native_byteorder() == Some(false) {
        return Ok(None);
    }
    Ok(Some(match (dt.kind(), dt.itemsize()) {
        (b'i', 8) => read::<i64>(array)?,
        (b'i', 4) => read::<i32>(array)?.into_iter().map(i64::from).collect(),
        (b'i', 2) => read::<i16>(array)?.into_iter().map(i64::from).collect(),
        (b'i', 1) => read::<i8>(array)?.into_iter().map(i64::from).collect(),
        (b'u', 4) => read::<u32>(array)?.into_iter().map(i64::from).collect(),
        (b'u', 2) => read::<u16>(array)?.into_iter().map(i64::from).collect(),
        (b'u', 1) => read::<u8>(array)?.into_iter().map(i64::from).collect(),
        (b'u', 8) => read::<u64>(array)?
            .into_iter()
            .map(|v| {
                i64::try_from(v).map_err(|_| {
                    PyOverflowError::new_err(format!(
                        "field '{name}': {v} does not fit in a 64-bit signed integer"
                    ))
                })
            })
            .collect::<PyResult<_>>()?,
        (b'f', _) => {
            return Err(PyTypeError::new_err(format!(
                "field '{name}' expects integers, got a {} array (use .astype(np.int64) if that is meant)",
                dt.str()?
            )))
        }
        (b'b', _) => {
            return Err(PyTypeError::new_err(format!(
                "field '{name}' expects integers, got a bool array"
            )))
        }
        _ => return Ok(None),
    }))
}

/// Words of a numeric numpy column for a field of `dtype`; None when the
/// array needs element-wise conversion (strings, objects, odd byte orders).
pub fn numeric_words(
    name: &str,
    dtype: &DType,
    array: &Bound<'_, PyUntypedArray>,
) -> PyResult<Option<Vec<u64>>> {
    let kind = array.dtype().kind();
    match dtype {
        DType::F64 | DType::F32 => {
            if kind == b'b' {
                return Err(PyTypeError::new_err(format!(
                    "field '{name}' expects floats, got a bool array"
                )));
            }
            if matches!(kind, b'U' | b'S') {
                return Err(PyTypeError::new_err(format!(
                    "field '{name}' expects floats, got a string array"
                )));
            }
            let Some(values) = as_f64(array)? else {
                return Ok(None);
            };
            Ok(Some(if matches!(dtype, DType::F64) {
                values.into_iter().map(f64_word).collect()
            } else {
                values.into_iter().map(|v| f32_word(v as f32)).collect()
            }))
        }
        DType::I64 => {
            if matches!(kind, b'U' | b'S') {
                return Err(PyTypeError::new_err(format!(
                    "field '{name}' expects integers, got a string array"
                )));
            }
            Ok(as_i64(name, array)?.map(|v| v.into_iter().map(i64_word).collect()))
        }
        DType::Bool => {
            if kind == b'b' {
                let values = read::<bool>(array)?;
                return Ok(Some(values.into_iter().map(u64::from).collect()));
            }
            if kind == b'O' {
                return Ok(None);
            }
            Err(PyTypeError::new_err(format!(
                "field '{name}' expects bools, got a {} array",
                array.dtype().str()?
            )))
        }
        DType::Str | DType::Enum(_) => {
            if matches!(kind, b'U' | b'O') {
                Ok(None)
            } else {
                Err(PyTypeError::new_err(format!(
                    "field '{name}' expects strings, got a {} array",
                    array.dtype().str()?
                )))
            }
        }
    }
}
