//! The deliverability guard's compiled core. The Python engine (guard/engine) is the reference:
//! every type here behaves exactly as its Python namesake, event for event, and exposes the same
//! fields, so a snapshot written with either restores in the other (tests/test_core_differential.py).

use pyo3::prelude::*;

mod arrays;
mod cusum;
mod decode;
mod dedupe;
mod ids;
mod last;
mod numbers;
mod reader;
mod skipped;
mod sliding;
mod snapshot;

/// Message ids kept as evidence for audits (windows.py: SAMPLE_IDS).
const SAMPLE_IDS: usize = 3;

/// A series' latest sample ids, None until it has one: boxed, so the many series that keep none (denominators, and
/// numerators with no message ids yet) spend a pointer on them, not a vector's three words.
pub(crate) type Samples<T> = Option<Box<Vec<T>>>;

/// A series' latest sample ids: `sample` appended, the oldest dropped past SAMPLE_IDS (windows.py `_keep_latest`).
pub(crate) fn keep_latest<T>(samples: &mut Samples<T>, sample: T) {
    let samples = samples.get_or_insert_with(Box::default);
    samples.push(sample);
    if samples.len() > SAMPLE_IDS {
        samples.remove(0);
    }
}

/// Room for `extra` more values in a series' vector, grown by `step` (or `extra`, or a sixteenth of its length, if
/// more) at a time: a campaign's vectors stay close to their length, where doubling leaves a quarter of each unused on
/// average, over every campaign tracked (bench/RESULTS.md, "Memory": 8 % of a campaign's memory), and a long one
/// (a `last: 100000` ring) still grows geometrically, not by a copy every few values.
pub(crate) fn make_room<T>(values: &mut Vec<T>, extra: usize, step: usize) {
    if values.capacity() - values.len() < extra {
        values.reserve_exact(extra.max(step).max(values.len() / 16));
    }
}

#[pymodule]
fn guard_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<sliding::SlidingCount>()?;
    m.add_class::<last::LastN>()?;
    m.add_class::<cusum::Cusum>()?;
    m.add_class::<dedupe::DedupeStore>()?;
    m.add_class::<decode::FastDecoder>()?;
    m.add_class::<snapshot::CampaignEncoder>()?;
    m.add_function(wrap_pyfunction!(snapshot::restored_campaign_series, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot::series_fields, m)?)?;
    Ok(())
}
