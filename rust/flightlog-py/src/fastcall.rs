//! Vectorcall entry points for the per-row calls `record(*values)` and
//! `log(**fields)`, and for the benchmarks' call floor.
//!
//! Why raw FFI: a PyO3 method declared with `*values` receives a new tuple,
//! and one declared with `**fields` a new dict, on every call. For a call made
//! once per solver iteration those allocations cost more than recording the
//! row (`benches/RESULTS.md`). CPython's vectorcall protocol already holds the
//! arguments in an array, and the keyword names in a tuple owned by the
//! caller's code object, so these functions are `METH_FASTCALL` builtins
//! bound to the recorder that read the arguments where they lie. Everything
//! after reading the argument array is the safe code of `recorder.rs`.
//!
//! The unsafe surface is this file: building the builtins (a static
//! `PyMethodDef`) and turning CPython's raw argument pointers into borrowed
//! references. Panics are caught (`error::guard`) and never unwind into C.
#![allow(unsafe_code)]

use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use flightlog_core::{InPlace, Offer};

use crate::error::guard;
use crate::recorder::PyRecorder;

/// A `PyMethodDef` in static memory.
struct MethodDef(ffi::PyMethodDef);

// SAFETY: the definitions below are immutable: C string literals, a function
// pointer and flags. CPython only reads a `PyMethodDef` (it keeps the pointer
// in each builtin made from it), so sharing them between threads is sound.
unsafe impl Sync for MethodDef {}

/// `record`, reading ints through the C API.
static RECORD: MethodDef = record_def(record_fast::<IntsByApi>);

/// `record`, reading ints in place: bound only where [`IntsInPlace311`]
/// was detected (see [`IntRead::bound`]).
#[cfg(not(feature = "abi3"))]
static RECORD_INTS_IN_PLACE: MethodDef = record_def(record_fast::<IntsInPlace311>);

const fn record_def(meth: ffi::PyCFunctionFast) -> MethodDef {
    MethodDef(ffi::PyMethodDef {
        ml_name: c"record".as_ptr(),
        ml_meth: ffi::PyMethodDefPointer {
            PyCFunctionFast: meth,
        },
        ml_flags: ffi::METH_FASTCALL,
        ml_doc: c"record(*values)\n--\n\nRecords one row from values in schema order (constant columns excluded).".as_ptr(),
    })
}

static LOG: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"log".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFastWithKeywords: log_fast,
    },
    ml_flags: ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
    ml_doc: c"log(**fields)\n--\n\nRecords one row from keyword arguments.".as_ptr(),
});

static NOOP: MethodDef = MethodDef(ffi::PyMethodDef {
    ml_name: c"_noop".as_ptr(),
    ml_meth: ffi::PyMethodDefPointer {
        PyCFunctionFast: noop_fast,
    },
    ml_flags: ffi::METH_FASTCALL,
    ml_doc: c"_noop(*values)\n--\n\nThe same call as record() doing nothing: the benchmarks' call floor."
        .as_ptr(),
});

/// Which entry point to bind.
pub enum Entry {
    Record,
    /// `record` reading ints through the C API whatever the interpreter.
    RecordIntsByApi,
    Log,
    Noop,
}

/// A builtin function bound to `recorder` (its `__self__`), like a bound
/// method but called through vectorcall without building a tuple or a dict.
pub fn bind<'py>(recorder: &Bound<'py, PyRecorder>, entry: Entry) -> PyResult<Bound<'py, PyAny>> {
    let def = match entry {
        #[cfg(not(feature = "abi3"))]
        Entry::Record if IntsInPlace311::detected().is_some() => &RECORD_INTS_IN_PLACE,
        Entry::Record | Entry::RecordIntsByApi => &RECORD,
        Entry::Log => &LOG,
        Entry::Noop => &NOOP,
    };
    // SAFETY: `def.0` is a 'static PyMethodDef that is never written (see
    // `MethodDef`); CPython stores the pointer and only reads through it, so
    // the `*mut` cast hands out no write access in practice. `recorder` is a
    // live object; the builtin takes its own strong reference to it, which is
    // what the entry points rely on for `slf`. A NULL result carries a Python
    // error, which `from_owned_ptr_or_err` returns.
    unsafe {
        let f = ffi::PyCFunction_NewEx(
            ptr::from_ref(&def.0).cast_mut(),
            recorder.as_ptr(),
            ptr::null_mut(),
        );
        Bound::from_owned_ptr_or_err(recorder.py(), f)
    }
}

/// Returns `f`'s result to CPython: a new reference to `None`, or NULL with
/// the exception set.
fn finish(py: Python<'_>, result: PyResult<()>) -> *mut ffi::PyObject {
    match result {
        Ok(()) => py.None().into_ptr(),
        Err(e) => {
            // The cold path attaches for real: PyO3 then also lowers the
            // reference counts it deferred while the error was being built
            // (objects held by a conversion error; see `attached`), instead
            // of at some later PyO3 call, so a loop of failing calls holds
            // nothing.
            Python::attach(|py| e.restore(py));
            ptr::null_mut()
        }
    }
}

/// The token of a thread CPython called into (a builtin's body).
///
/// Not `Python::attach`: no PyO3 frame lies below a builtin, so PyO3 does not
/// know the thread is attached and `attach` would run `PyGILState_Ensure` and
/// `PyGILState_Release` on every call (140 instructions by callgrind: what a
/// `record()` of 10 values adds to a no-op call went from 690 to 550). The cost of skipping PyO3's attach count: a
/// `Py<T>` dropped during the call has its reference count lowered at the next
/// PyO3 attach instead of at once. The row path drops none (the arguments are
/// borrowed `Bound`s, whose drops need no count); the error path attaches
/// before it returns (`finish`).
///
/// # Safety
/// The calling thread is attached to the interpreter for all of `'py`.
unsafe fn attached<'py>() -> Python<'py> {
    // SAFETY: the caller's contract.
    unsafe { Python::assume_attached() }
}

/// The `n` argument pointers at `args` as a slice of borrowed objects.
///
/// # Safety
/// `args` points to `n` valid, non-NULL object pointers (CPython's vectorcall
/// argument array) that outlive `'a`, or is NULL when `n` is 0, and the
/// interpreter is attached.
unsafe fn objects<'a, 'py>(
    _py: Python<'py>,
    args: *const *mut ffi::PyObject,
    n: usize,
) -> &'a [Bound<'py, PyAny>] {
    // An empty argument array may come as NULL (a call with no arguments).
    if args.is_null() {
        return &[];
    }
    // SAFETY: `Bound<'py, PyAny>` is `#[repr(transparent)]` over `Py<PyAny>`
    // (itself `#[repr(transparent)]` over a `NonNull<PyObject>`) plus the
    // zero-sized `Python<'py>` token, so it has the layout of a non-NULL
    // object pointer; the caller guarantees `n` such pointers live for `'a`.
    // The slice is never dropped as owned values: it only lends `&Bound`s, so
    // no reference count changes hands.
    unsafe { std::slice::from_raw_parts(args.cast::<Bound<'py, PyAny>>(), n) }
}

/// The value of an exact `float` (not a subclass, which may override
/// `__float__`), read where CPython keeps it: no call, no reference count.
#[cfg(not(feature = "abi3"))]
#[inline(always)]
pub(crate) fn exact_float(value: &Bound<'_, PyAny>) -> Option<f64> {
    let p = value.as_ptr();
    // SAFETY: `p` is a live object borrowed for the call, so its header may
    // be read (what `Py_TYPE` does). An object whose type is exactly
    // `PyFloat_Type` is a `PyFloatObject`, whose `ob_fval` is set at creation
    // and never changes.
    unsafe {
        if ffi::Py_TYPE(p) == std::ptr::addr_of_mut!(ffi::PyFloat_Type) {
            Some((*p.cast::<ffi::PyFloatObject>()).ob_fval)
        } else {
            None
        }
    }
}

/// The stable ABI hides `PyFloatObject`: the checked call instead.
#[cfg(feature = "abi3")]
#[inline(always)]
pub(crate) fn exact_float(value: &Bound<'_, PyAny>) -> Option<f64> {
    use pyo3::types::{PyFloat, PyFloatMethods};
    value.cast_exact::<PyFloat>().ok().map(|x| x.value())
}

/// Whether ints of one or two digits are read where CPython keeps them: set
/// once at import by [`detect_int_layout`], for the one layout it knows
/// (CPython 3.11, 30-bit digits) and only after checking it on known values.
/// [`bind`] then makes `record()` with [`IntsInPlace311`], and [`exact_int`]
/// reads in place; otherwise every int goes through
/// `PyLong_AsLongAndOverflow`.
#[cfg(not(feature = "abi3"))]
static INT_DIGITS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// CPython 3.11's int: a variable-size header whose `ob_size` is the number
/// of 30-bit digits with the value's sign, then the digits, least
/// significant first (`Include/cpython/longintrepr.h`). 3.12 changed it,
/// which [`detect_int_layout`] checks before this is ever read.
#[cfg(not(feature = "abi3"))]
#[repr(C)]
struct LongObject311 {
    head: ffi::PyVarObject,
    /// `ob_digit[1]` in C: as many digits follow as `ob_size` says.
    digits: [u32; 1],
}

/// The value of a one- or two-digit int read from its digits (CPython 3.11
/// layout), `None` for any other size.
///
/// # Safety
/// `p` is a live object of exactly `PyLong_Type`, and [`INT_DIGITS`] is set
/// (the running interpreter lays ints out as [`LongObject311`]).
#[cfg(not(feature = "abi3"))]
#[inline(always)]
unsafe fn small_int_311(p: *mut ffi::PyObject) -> Option<i64> {
    // SAFETY: the caller's contract: an int object of the 3.11 layout, whose
    // `ob_size` says how many digits follow; a digit is read only when the
    // size says it is there (a zero has none).
    unsafe {
        let long = p.cast::<LongObject311>();
        let size = (*long).head.ob_size;
        // The usual value (an iteration count below 2^30) tested first, by
        // itself: in one `match` with the others it took a jump table.
        if size == 1 {
            return Some(i64::from(*std::ptr::addr_of!((*long).digits).cast::<u32>()));
        }
        other_small_int_311(long, size)
    }
}

/// [`small_int_311`] of every size but 1 (0, negative, or two digits).
///
/// # Safety
/// As for [`small_int_311`]; `size` is the object's `ob_size`.
#[cfg(not(feature = "abi3"))]
#[cold]
#[inline(never)]
unsafe fn other_small_int_311(long: *const LongObject311, size: ffi::Py_ssize_t) -> Option<i64> {
    // SAFETY: the caller's contract; a digit is read only when `size` says
    // it is there.
    unsafe {
        let digit = |i: usize| i64::from(*std::ptr::addr_of!((*long).digits).cast::<u32>().add(i));
        match size {
            0 => Some(0),
            -1 => Some(-digit(0)),
            2 => Some(digit(0) | (digit(1) << 30)),
            -2 => Some(-(digit(0) | (digit(1) << 30))),
            _ => None,
        }
    }
}

/// Turns on [`small_int_311`] if the running interpreter is CPython 3.11
/// with 30-bit digits in 4 bytes and the read gives the right value for
/// ints of one and two digits around every digit boundary, and declines the
/// ones of three.
#[cfg(not(feature = "abi3"))]
pub(crate) fn detect_int_layout(py: Python<'_>) -> PyResult<()> {
    // Anything unexpected (a missing attribute included) leaves the fast path
    // off rather than failing the import.
    let known = || -> PyResult<bool> {
        let sys = py.import("sys")?;
        let name: String = sys.getattr("implementation")?.getattr("name")?.extract()?;
        let version = sys.getattr("version_info")?;
        if name != "cpython"
            || version.getattr("major")?.extract::<u32>()? != 3
            || version.getattr("minor")?.extract::<u32>()? != 11
        {
            return Ok(false);
        }
        let info = sys.getattr("int_info")?;
        Ok(info.getattr("bits_per_digit")?.extract::<u32>()? == 30
            && info.getattr("sizeof_digit")?.extract::<u32>()? == 4)
    };
    if !known().unwrap_or(false) {
        return Ok(());
    }
    // Every value below 2^60 in size must be read, and read right; every
    // larger one (three digits) must be left to the call.
    let mut agrees = true;
    for base in [
        0i64,
        1,
        (1 << 30) - 1,
        1 << 30,
        (1 << 60) - 1,
        1 << 60,
        i64::MAX,
    ] {
        for v in [base, -base] {
            let int = v.into_pyobject(py)?;
            let p = int.as_ptr();
            // SAFETY: `p` is a live int (exactly `PyLong_Type`: made from an
            // i64 just above) and the interpreter is 3.11 with 30-bit digits,
            // as checked above: the layout `small_int_311` reads.
            let read = unsafe { small_int_311(p) };
            agrees &= match read {
                Some(r) => v.unsigned_abs() < 1 << 60 && r == v,
                None => v.unsigned_abs() >= 1 << 60,
            };
        }
    }
    INT_DIGITS.store(agrees, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// Whether [`detect_int_layout`] found the layout [`IntsInPlace311`] reads.
pub(crate) fn ints_in_place() -> bool {
    #[cfg(not(feature = "abi3"))]
    return IntsInPlace311::detected().is_some();
    #[cfg(feature = "abi3")]
    return false;
}

/// The stable ABI: nothing to detect (ints take the checked conversion).
#[cfg(feature = "abi3")]
pub(crate) fn detect_int_layout(_py: Python<'_>) -> PyResult<()> {
    Ok(())
}

/// How an entry point reads an exact `int` (not a subclass, nor `bool`) that
/// fits an i64. `record()`'s builtin is made for one reader ([`bind`] picks
/// it), which reads the leading int of the usual row (the iteration, then
/// floats: [`crate::recorder`]'s `fill_values`) with no test of how per row.
/// Every other int (later slots, `log()`, the general path) is read by
/// [`exact_int`], which tests [`INT_DIGITS`] each time.
pub(crate) trait IntRead: Copy {
    /// The reader of the builtin being called.
    ///
    /// # Safety
    /// [`bind`] made the builtin for this reader: for [`IntsInPlace311`],
    /// only once [`IntsInPlace311::detected`] found its layout.
    unsafe fn bound() -> Self;

    /// The value of `value` if it is an exact `int` that fits an i64; `None`
    /// for anything else, which the caller converts the general way (and
    /// which raises there when the int is too large).
    fn exact_int(self, value: &Bound<'_, PyAny>) -> Option<i64>;
}

/// Reads ints through the C API: any interpreter.
#[derive(Clone, Copy)]
pub(crate) struct IntsByApi;

impl IntRead for IntsByApi {
    unsafe fn bound() -> Self {
        IntsByApi
    }

    #[cfg(not(feature = "abi3"))]
    #[inline(always)]
    fn exact_int(self, value: &Bound<'_, PyAny>) -> Option<i64> {
        let p = exact_long(value)?;
        // SAFETY: `p` is an exact int, borrowed for the call.
        unsafe { api_int(p) }
    }

    /// The stable ABI: the checked conversion.
    #[cfg(feature = "abi3")]
    #[inline(always)]
    fn exact_int(self, value: &Bound<'_, PyAny>) -> Option<i64> {
        use pyo3::types::PyInt;
        value
            .cast_exact::<PyInt>()
            .ok()
            .and_then(|i| i.extract::<i64>().ok())
    }
}

/// `value`'s object if it is exactly an `int` (not a subclass, nor `bool`).
#[cfg(not(feature = "abi3"))]
#[inline(always)]
fn exact_long(value: &Bound<'_, PyAny>) -> Option<*mut ffi::PyObject> {
    let p = value.as_ptr();
    // SAFETY: `p` is a live object borrowed for the call: its header (what
    // `Py_TYPE` reads) may be read.
    let ty = unsafe { ffi::Py_TYPE(p) };
    (ty == std::ptr::addr_of_mut!(ffi::PyLong_Type)).then_some(p)
}

/// `PyLong_AsLongAndOverflow` of an int.
///
/// # Safety
/// `p` is a live object of exactly `PyLong_Type` ([`exact_long`]).
#[cfg(not(feature = "abi3"))]
#[inline(always)]
unsafe fn api_int(p: *mut ffi::PyObject) -> Option<i64> {
    let mut overflow = 0;
    // SAFETY: the caller's contract. For an object of exactly `PyLong_Type`
    // the call cannot fail: it calls no `__index__` and reports an
    // out-of-range value through `overflow`, setting no exception.
    let v = unsafe { ffi::PyLong_AsLongAndOverflow(p, &mut overflow) };
    // `c_long` is 64 bits here but 32 on Windows: the conversion is not useless there.
    #[allow(clippy::useless_conversion)]
    (overflow == 0).then_some(i64::from(v))
}

/// Reads ints of one or two digits where CPython 3.11 keeps them
/// ([`small_int_311`]), others through the C API. A value of it exists only
/// where [`detect_int_layout`] found that layout: it is the proof that the
/// in-place read is sound.
#[cfg(not(feature = "abi3"))]
#[derive(Clone, Copy)]
pub(crate) struct IntsInPlace311(());

#[cfg(not(feature = "abi3"))]
impl IntsInPlace311 {
    /// The reader, if the running interpreter lays ints out as it reads them.
    #[inline(always)]
    pub(crate) fn detected() -> Option<Self> {
        INT_DIGITS
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(IntsInPlace311(()))
    }

    /// The value of `p`, an exact int: in place if it has one or two
    /// digits, else through the C API.
    ///
    /// # Safety
    /// `p` is a live object of exactly `PyLong_Type` ([`exact_long`]).
    #[inline(always)]
    unsafe fn read(self, p: *mut ffi::PyObject) -> Option<i64> {
        // SAFETY: the caller's contract, and `self` exists: the running
        // interpreter has the layout `small_int_311` reads.
        unsafe {
            if let Some(v) = small_int_311(p) {
                return Some(v);
            }
            api_int(p)
        }
    }
}

#[cfg(not(feature = "abi3"))]
impl IntRead for IntsInPlace311 {
    unsafe fn bound() -> Self {
        // `INT_DIGITS` is set once, at import, before any builtin is bound:
        // the caller's contract says it was found set.
        debug_assert!(
            Self::detected().is_some(),
            "bound without the layout detected"
        );
        IntsInPlace311(())
    }

    #[inline(always)]
    fn exact_int(self, value: &Bound<'_, PyAny>) -> Option<i64> {
        let p = exact_long(value)?;
        // SAFETY: `p` is an exact int, borrowed for the call.
        unsafe { self.read(p) }
    }
}

/// [`IntRead::exact_int`] for the paths made for no one reader (ints after
/// the first slot, the general conversions, `log()`): the in-place read
/// where it was detected (tested per value), else the C API.
#[cfg(not(feature = "abi3"))]
#[inline(always)]
pub(crate) fn exact_int(value: &Bound<'_, PyAny>) -> Option<i64> {
    // The type first, then the layout: the order the row paths were tuned
    // with (`benches/bench_instructions.py`).
    let p = exact_long(value)?;
    // SAFETY: `p` is an exact int, borrowed for the call.
    unsafe {
        match IntsInPlace311::detected() {
            Some(ints) => ints.read(p),
            None => api_int(p),
        }
    }
}

/// The stable ABI: the checked conversion.
#[cfg(feature = "abi3")]
#[inline(always)]
pub(crate) fn exact_int(value: &Bound<'_, PyAny>) -> Option<i64> {
    IntsByApi.exact_int(value)
}

/// `record(*values)`, reading ints with `R`.
///
/// # Safety
/// Called by CPython only, through a builtin made by [`bind`] for `R`: the
/// thread is attached to the interpreter, `slf` is that builtin's recorder,
/// and `args` points to `nargs` valid (borrowed) object pointers for the
/// call's duration.
unsafe extern "C" fn record_fast<R: IntRead>(
    slf: *mut ffi::PyObject,
    args: *mut *mut ffi::PyObject,
    nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls builtins only from an attached thread.
    let py = unsafe { attached() };
    // SAFETY: see the function's contract: `slf` is a `PyRecorder` (so the
    // unchecked cast is right, and it is not NULL: said to the compiler, which
    // would otherwise test it for `from_ptr`'s panic), and the argument array
    // holds `nargs` live pointers, borrowed for this call.
    let (recorder, values) = unsafe {
        std::hint::assert_unchecked(!slf.is_null());
        (
            Borrowed::from_ptr(py, slf).cast_unchecked::<PyRecorder>(),
            // A METH_FASTCALL count is never negative (`PyVectorcall_NARGS`
            // masks the flag bit off).
            objects(py, args, nargs as usize),
        )
    };
    let recorder = recorder.get();
    // SAFETY: CPython calls this instance only through the builtin `bind`
    // made for `R`.
    let ints = unsafe { R::bound() };
    // The common row, recorded in place; its small result is matched here so
    // that the row that returns at once builds no `PyResult`. A panic is
    // caught as on every path (`guard`) and never unwinds into C.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recorder.record_in_place(values, ints)
    })) {
        Ok(Ok(InPlace::Offered(Offer::OverBudget { first: true }))) => finish(
            py,
            guard(|| recorder.row_offered(py, Ok(Offer::OverBudget { first: true }))),
        ),
        Ok(Ok(InPlace::Offered(_))) => py.None().into_ptr(),
        Ok(Ok(InPlace::Declined)) => finish(py, guard(|| recorder.record_general(py, values))),
        Ok(Err(e)) => finish(py, guard(|| recorder.row_offered(py, Err(e)))),
        Err(panic) => finish(py, Err(crate::error::panic_error(panic))),
    }
}

/// The positional count in a vectorcall `nargsf`: CPython's
/// `PyVectorcall_NARGS`, which strips the `PY_VECTORCALL_ARGUMENTS_OFFSET`
/// flag (the top bit). Written out because the limited API (abi3) exports
/// that inline function only from Python 3.12 on.
fn vectorcall_nargs(nargsf: ffi::Py_ssize_t) -> ffi::Py_ssize_t {
    const ARGUMENTS_OFFSET: usize = 1 << (usize::BITS - 1);
    (nargsf as usize & !ARGUMENTS_OFFSET) as ffi::Py_ssize_t
}

/// `log(**fields)`.
///
/// # Safety
/// As for [`record_fast`]; besides, `kwnames` is NULL or a tuple of `str`
/// whose values follow the positional ones in `args`.
unsafe extern "C" fn log_fast(
    slf: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: ffi::Py_ssize_t,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls builtins only from an attached thread.
    let py = unsafe { attached() };
    let nargs = vectorcall_nargs(nargsf);
    if nargs != 0 {
        let err = pyo3::exceptions::PyTypeError::new_err(format!(
            "log() takes keyword arguments only ({nargs} positional given); \
             use record() for values in schema order"
        ));
        return finish(py, Err(err));
    }
    // SAFETY: see the function's contract: `slf` is a `PyRecorder` (not NULL,
    // as for `record_fast`), `kwnames` NULL or a tuple, and with no positional
    // arguments the array holds one live value per keyword name, borrowed for
    // this call.
    let (recorder, names) = unsafe {
        std::hint::assert_unchecked(!slf.is_null());
        (
            Borrowed::from_ptr(py, slf).cast_unchecked::<PyRecorder>(),
            (!kwnames.is_null())
                .then(|| Borrowed::from_ptr(py, kwnames).cast_unchecked::<PyTuple>()),
        )
    };
    // The limited API (abi3 wheels) has no view of a tuple's item array, so
    // there the names are copied out (one small allocation per call).
    #[cfg(not(feature = "abi3"))]
    let keys: &[Bound<'_, PyAny>] = match &names {
        Some(t) => t.as_slice(),
        None => &[],
    };
    #[cfg(feature = "abi3")]
    let owned: Vec<Bound<'_, PyAny>> = names.iter().flat_map(|t| t.iter()).collect();
    #[cfg(feature = "abi3")]
    let keys: &[Bound<'_, PyAny>] = &owned;
    // SAFETY: as above, `keys.len()` values follow in `args`.
    let values = unsafe { objects(py, args, keys.len()) };
    let recorder = recorder.get();
    // As in `record_fast`: the common row returns without a `PyResult`.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        recorder.log_in_place(keys, values)
    })) {
        Ok(Ok(InPlace::Offered(Offer::OverBudget { first: true }))) => finish(
            py,
            guard(|| recorder.row_offered(py, Ok(Offer::OverBudget { first: true }))),
        ),
        Ok(Ok(InPlace::Offered(_))) => py.None().into_ptr(),
        Ok(Ok(InPlace::Declined)) => finish(py, guard(|| recorder.log_general(py, keys, values))),
        Ok(Err(e)) => finish(py, guard(|| recorder.row_offered(py, Err(e)))),
        Err(panic) => finish(py, Err(crate::error::panic_error(panic))),
    }
}

/// `_noop(*values)`: the call floor, the same convention as `record`.
///
/// # Safety
/// As for [`record_fast`] (the arguments are not read).
unsafe extern "C" fn noop_fast(
    _slf: *mut ffi::PyObject,
    _args: *mut *mut ffi::PyObject,
    _nargs: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    // SAFETY: CPython calls builtins only from an attached thread.
    let py = unsafe { attached() };
    py.None().into_ptr()
}
