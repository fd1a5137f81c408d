//! The Python engine keeps its series' numbers in `array.array`s; the snapshot reads and writes them
//! as such. These turn the core's vectors into arrays of the same typecode and back.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyBytes;

static ARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn array_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    ARRAY.import(py, "array", "array")
}

/// An `array.array(typecode)` holding `values` (native byte order, as `array` keeps them).
pub(crate) fn to_array<'py, T: Copy>(
    py: Python<'py>,
    typecode: &str,
    values: &[T],
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: T is a plain number type (f64, i64, i32); its bytes are what `array` stores
    let bytes = unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    };
    array_type(py)?.call1((typecode, PyBytes::new(py, bytes)))
}

/// The numbers of any sequence of them (an `array.array`, a list), refusing what is not a number of T.
pub(crate) fn from_sequence<T: for<'a, 'py> FromPyObject<'a, 'py>>(
    values: &Bound<'_, PyAny>,
) -> PyResult<Vec<T>> {
    values
        .try_iter()?
        .map(|value| value?.extract::<T>().map_err(Into::into))
        .collect()
}
