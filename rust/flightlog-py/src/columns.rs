//! numpy columns → ring words in bulk (no per-element Python calls).
//!
//! A column is read in place, a chunk of rows at a time, following numpy's
//! byte strides exactly: a field of a structured array (`b["E"]` of a 12- or
//! 17-byte record), a reversed or Fortran-order slice, a read-only array and a
//! zero-stride broadcast are all read as numpy itself reads them. Nothing is
//! copied whole: `extend()` converts bounded chunks (see `recorder.rs`).
#![allow(unsafe_code)]

use flightlog_core::row_layout::{f32_word, f64_word, i64_word};
use flightlog_core::DType;
use numpy::{PyArrayDescrMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOverflowError, PyTypeError};
use pyo3::prelude::*;

/// The element type of a numeric column, as stored in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F64,
    F32,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl Elem {
    fn of(kind: u8, size: usize) -> Option<Elem> {
        Some(match (kind, size) {
            (b'f', 8) => Elem::F64,
            (b'f', 4) => Elem::F32,
            (b'i', 8) => Elem::I64,
            (b'i', 4) => Elem::I32,
            (b'i', 2) => Elem::I16,
            (b'i', 1) => Elem::I8,
            (b'u', 8) => Elem::U64,
            (b'u', 4) => Elem::U32,
            (b'u', 2) => Elem::U16,
            (b'u', 1) => Elem::U8,
            (b'b', 1) => Elem::Bool,
            _ => return None,
        })
    }

    fn is_float(self) -> bool {
        matches!(self, Elem::F64 | Elem::F32)
    }
}

/// What a column's words encode (the schema dtype of its field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    F64,
    F32,
    I64,
    Bool,
}

/// A 1-D numeric numpy array read in place, element `i` at byte offset
/// `i * stride` from `data` (numpy's own addressing; the stride may be
/// negative, zero, or not a multiple of the element size).
pub struct NumericColumn<'py> {
    /// Keeps the array (and so its buffer) alive while `data` is read.
    _array: Bound<'py, PyUntypedArray>,
    data: *const u8,
    stride: isize,
    len: usize,
    elem: Elem,
    target: Target,
}

impl NumericColumn<'_> {
    /// Rows in the column.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Reads element `i` as `T`.
    ///
    /// # Safety
    /// `i < self.len` and `T` is the type `self.elem` names (same size).
    #[inline(always)]
    unsafe fn get<T: Copy>(&self, i: usize) -> T {
        // SAFETY: numpy guarantees that for `0 <= i < shape[0]` the bytes
        // `data + i * strides[0] .. + itemsize` lie inside the array's buffer
        // (that is what its strides mean), and `T` has exactly `itemsize`
        // bytes (the caller's contract). The buffer stays alive: `_array`
        // holds a reference, and an array with more than one reference cannot
        // be resized in place (numpy refuses). The address need not be
        // aligned (packed structured fields), hence `read_unaligned`.
        unsafe {
            let p = self.data.offset(i as isize * self.stride);
            std::ptr::read_unaligned(p.cast::<T>())
        }
    }

    /// Appends the words of rows `start..end` to `out`. The values were
    /// checked by [`numeric_column`], so conversion cannot fail here.
    pub fn words(&self, start: usize, end: usize, out: &mut Vec<u64>) {
        assert!(start <= end && end <= self.len, "chunk out of range");
        macro_rules! each {
            ($t:ty, $conv:expr) => {{
                let conv = $conv;
                // SAFETY: `i < end <= len`, and `$t` is the element type `elem` names.
                out.extend((start..end).map(|i| conv(unsafe { self.get::<$t>(i) })));
            }};
        }
        macro_rules! numeric {
            ($to:expr) => {{
                let to = $to;
                match self.elem {
                    Elem::F64 => each!(f64, |v: f64| to(v, v as i64)),
                    Elem::F32 => each!(f32, |v: f32| to(f64::from(v), v as i64)),
                    Elem::I64 => each!(i64, |v: i64| to(v as f64, v)),
                    Elem::I32 => each!(i32, |v: i32| to(f64::from(v), i64::from(v))),
                    Elem::I16 => each!(i16, |v: i16| to(f64::from(v), i64::from(v))),
                    Elem::I8 => each!(i8, |v: i8| to(f64::from(v), i64::from(v))),
                    // Checked to fit in i64 for i64 fields by `numeric_column`.
                    Elem::U64 => each!(u64, |v: u64| to(v as f64, v as i64)),
                    Elem::U32 => each!(u32, |v: u32| to(f64::from(v), i64::from(v))),
                    Elem::U16 => each!(u16, |v: u16| to(f64::from(v), i64::from(v))),
                    Elem::U8 => each!(u8, |v: u8| to(f64::from(v), i64::from(v))),
                    Elem::Bool => each!(u8, |v: u8| to(f64::from(v), i64::from(v))),
                }
            }};
        }
        match self.target {
            Target::F64 => numeric!(|f: f64, _i: i64| f64_word(f)),
            Target::F32 => numeric!(|f: f64, _i: i64| f32_word(f as f32)),
            Target::I64 => numeric!(|_f: f64, i: i64| i64_word(i)),
            // numpy bools are one byte, 0 or 1; anything else non-zero is true.
            Target::Bool => each!(u8, |v: u8| u64::from(v != 0)),
        }
    }

    /// True where the (bool) column is set, for rows `start..end`.
    pub fn bools(&self, start: usize, end: usize, out: &mut Vec<bool>) {
        assert!(self.elem == Elem::Bool && start <= end && end <= self.len);
        // SAFETY: `i < end <= len`; a bool element is one byte.
        out.extend((start..end).map(|i| unsafe { self.get::<u8>(i) } != 0));
    }

    /// The first row where the (bool) column is set.
    pub fn first_set(&self) -> Option<usize> {
        assert!(self.elem == Elem::Bool);
        // SAFETY: `i < len`; a bool element is one byte.
        (0..self.len).find(|&i| unsafe { self.get::<u8>(i) } != 0)
    }
}

/// A 1-D bool array (a mask) read in place.
pub fn bool_column<'py>(array: &Bound<'py, PyUntypedArray>) -> Option<NumericColumn<'py>> {
    let dt = array.dtype();
    if array.ndim() != 1 || Elem::of(dt.kind(), dt.itemsize()) != Some(Elem::Bool) {
        return None;
    }
    Some(in_place(array, Elem::Bool, Target::Bool))
}

fn in_place<'py>(
    array: &Bound<'py, PyUntypedArray>,
    elem: Elem,
    target: Target,
) -> NumericColumn<'py> {
    // SAFETY: `as_array_ptr` is a live `PyArrayObject` (we hold `array`);
    // reading its `data` field is what numpy's PyArray_DATA does.
    let data = unsafe { (*array.as_array_ptr()).fields.data } as *const u8;
    NumericColumn {
        _array: array.clone(),
        data,
        stride: array.strides()[0],
        len: array.shape()[0],
        elem,
        target,
    }
}

/// What to convert datetimes to, for the error message.
const TIME_HINT: &str = "convert it to numbers first, e.g. (t - t[0]) / np.timedelta64(1, 'ms') \
                         for f64 milliseconds, or t.astype('datetime64[ns]').astype(np.int64) \
                         for i64 nanoseconds";

/// A numeric numpy column for a field of `dtype`, checked whole (so that
/// reading it later cannot fail); None when the array needs element-wise
/// conversion (strings, objects, float16, odd byte orders). Rejects what the
/// field never accepts (the rule of `extend()`'s docstring).
pub fn numeric_column<'py>(
    name: &str,
    dtype: &DType,
    array: &Bound<'py, PyUntypedArray>,
) -> PyResult<Option<NumericColumn<'py>>> {
    let dt = array.dtype();
    let kind = dt.kind();
    let type_err = |what: String| PyTypeError::new_err(format!("field '{name}' {what}"));
    let expects = match dtype {
        DType::F64 | DType::F32 => "floats",
        DType::I64 => "integers",
        DType::Bool => "bools",
        DType::Str | DType::Enum(_) => "strings",
    };
    if matches!(kind, b'M' | b'm') {
        return Err(type_err(format!(
            "expects {expects}, got a {} array: times are not stored as such; {TIME_HINT}",
            dt.str()?
        )));
    }
    if matches!(kind, b'c' | b'V') {
        return Err(type_err(format!(
            "expects {expects}, got a {} array",
            dt.str()?
        )));
    }
    let target = match dtype {
        DType::F64 => Target::F64,
        DType::F32 => Target::F32,
        DType::I64 => Target::I64,
        DType::Bool => Target::Bool,
        DType::Str | DType::Enum(_) => {
            return if matches!(kind, b'U' | b'O') {
                Ok(None)
            } else {
                Err(type_err(format!(
                    "expects strings, got a {} array",
                    dt.str()?
                )))
            };
        }
    };
    match (target, kind) {
        (Target::F64 | Target::F32 | Target::I64, b'b') => {
            return Err(type_err(format!("expects {expects}, got a bool array")))
        }
        (_, b'U' | b'S') => return Err(type_err(format!("expects {expects}, got a string array"))),
        (Target::I64, b'f') => {
            return Err(type_err(format!(
                "expects integers, got a {} array (use .astype(np.int64) if that is meant)",
                dt.str()?
            )))
        }
        (Target::Bool, b'b') => {}
        (Target::Bool, b'O') => return Ok(None),
        (Target::Bool, _) => {
            return Err(type_err(format!(
                "expects bools, got a {} array",
                dt.str()?
            )))
        }
        _ => {}
    }
    if dt.is_native_byteorder() == Some(false) {
        return Ok(None);
    }
    let Some(elem) = Elem::of(kind, dt.itemsize()) else {
        return Ok(None);
    };
    if target == Target::I64 && elem.is_float() {
        unreachable!("float arrays for i64 fields are rejected above");
    }
    let col = in_place(array, elem, target);
    if target == Target::I64 && elem == Elem::U64 {
        // SAFETY: `i < len`; the element is a u64.
        if let Some(v) = (0..col.len)
            .map(|i| unsafe { col.get::<u64>(i) })
            .find(|&v| i64::try_from(v).is_err())
        {
            return Err(PyOverflowError::new_err(format!(
                "field '{name}': {v} does not fit in a 64-bit signed integer"
            )));
        }
    }
    Ok(Some(col))
}
