//! The deliverability guard's compiled core. The Python engine (guard/engine) is the reference:
//! every type here behaves exactly as its Python namesake, proven by differential tests.

use pyo3::prelude::*;

#[pymodule]
fn guard_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
