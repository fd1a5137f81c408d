//! snapshot.py's encoding of one campaign, for the compiled engine: the very msgpack bytes msgspec writes
//! for the campaign's mirror (an array per campaign, a tagged array per series, arrays of numbers as their
//! little-endian bytes), without building the mirror objects. The Python encoding is the reference
//! (tests/test_core_differential.py compares the bytes).

use std::cmp::Ordering::{Equal, Less};
use std::collections::HashMap;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use rmp::encode;

use crate::cusum::Cusum;
use crate::last::LastN;
use crate::reader::Reader;
use crate::sliding::SlidingCount;

const INFALLIBLE: &str = "writing to a Vec cannot fail";

pub(crate) fn nil(out: &mut Vec<u8>) {
    encode::write_nil(out).expect(INFALLIBLE);
}

pub(crate) fn boolean(out: &mut Vec<u8>, value: bool) {
    encode::write_bool(out, value).expect(INFALLIBLE);
}

pub(crate) fn float(out: &mut Vec<u8>, value: f64) {
    encode::write_f64(out, value).expect(INFALLIBLE);
}

/// An int in its most compact form, as msgspec writes it.
pub(crate) fn int(out: &mut Vec<u8>, value: i64) {
    encode::write_sint(out, value).expect(INFALLIBLE);
}

pub(crate) fn array(out: &mut Vec<u8>, len: usize) -> PyResult<()> {
    let len =
        u32::try_from(len).map_err(|_| PyValueError::new_err("an array too long for msgpack"))?;
    encode::write_array_len(out, len).expect(INFALLIBLE);
    Ok(())
}

pub(crate) fn text(out: &mut Vec<u8>, value: &Bound<'_, PyString>) -> PyResult<()> {
    encode::write_str(out, value.to_str()?).expect(INFALLIBLE);
    Ok(())
}

pub(crate) fn bytes(out: &mut Vec<u8>, value: &[u8]) {
    encode::write_bin(out, value).expect(INFALLIBLE);
}

/// An `array.array` of numbers as snapshot.py stores it: its bytes, little-endian.
pub(crate) fn numbers<const N: usize, T: Copy>(
    out: &mut Vec<u8>,
    values: &[T],
    le: fn(T) -> [u8; N],
) -> PyResult<()> {
    let len = u32::try_from(values.len() * N)
        .map_err(|_| PyValueError::new_err("numbers too many for msgpack"))?;
    encode::write_bin_len(out, len).expect(INFALLIBLE);
    out.reserve(values.len() * N);
    for &value in values {
        out.extend_from_slice(&le(value));
    }
    Ok(())
}

/// An optional list of samples: nil, or an array of what `sample` writes for each.
pub(crate) fn samples<T>(
    out: &mut Vec<u8>,
    samples: &crate::Samples<T>,
    mut sample: impl FnMut(&mut Vec<u8>, &T) -> PyResult<()>,
) -> PyResult<()> {
    match samples {
        None => nil(out),
        Some(samples) => {
            array(out, samples.len())?;
            for one in samples.iter() {
                sample(out, one)?;
            }
        }
    }
    Ok(())
}

/// A field of the engine's own state (a campaign's, a rule state's): None, a bool, an int, a float, a string
/// (a StrEnum too: its value), or a tuple or list of them, each as msgspec writes it.
fn value(out: &mut Vec<u8>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if value.is_none() {
        nil(out);
    } else if let Ok(flag) = value.cast::<PyBool>() {
        boolean(out, flag.is_true());
    } else if let Ok(number) = value.cast::<PyFloat>() {
        float(out, number.value());
    } else if let Ok(number) = value.cast::<PyInt>() {
        int(out, number.extract::<i64>()?);
    } else if let Ok(string) = value.cast::<PyString>() {
        text(out, string)?;
    } else if let Ok(items) = value.cast::<PyTuple>() {
        array(out, items.len())?;
        for item in items.iter() {
            self::value(out, &item)?;
        }
    } else if let Ok(items) = value.cast::<PyList>() {
        array(out, items.len())?;
        for item in items.iter() {
            self::value(out, &item)?;
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "no snapshot encoding for {}",
            value.get_type().name()?
        )));
    }
    Ok(())
}

fn series(py: Python<'_>, out: &mut Vec<u8>, series: &Bound<'_, PyAny>) -> PyResult<()> {
    if series.is_none() {
        nil(out);
        Ok(())
    } else if let Ok(sliding) = series.cast::<SlidingCount>() {
        sliding.borrow().write_snapshot(py, out)
    } else if let Ok(last) = series.cast::<LastN>() {
        last.borrow().write_snapshot(py, out)
    } else if let Ok(cusum) = series.cast::<Cusum>() {
        cusum.borrow().write_snapshot(py, out)
    } else {
        Err(PyTypeError::new_err(format!(
            "a {} is no series of the compiled core",
            series.get_type().name()?
        )))
    }
}

enum Field {
    Id,
    Series,
    RuleStates,
    Plain(Py<PyString>),
}

/// Encodes a campaign's state as snapshot.py's `_Campaign` mirror, given the mirrors' field names (checked
/// against the series' own at construction: a core built for another snapshot format is refused).
#[pyclass(module = "guard_core", frozen)]
pub struct CampaignEncoder {
    fields: Vec<Field>,
    rule_state_fields: Vec<Py<PyString>>,
}

#[pymethods]
impl CampaignEncoder {
    #[new]
    fn new(
        py: Python<'_>,
        campaign_fields: Vec<String>,
        rule_state_fields: Vec<String>,
        series_fields: HashMap<String, Vec<String>>,
    ) -> PyResult<Self> {
        let own: [(&str, &[&str]); 3] = [
            ("sliding", &SlidingCount::FIELDS),
            ("last", &LastN::FIELDS),
            ("cusum", &Cusum::FIELDS),
        ];
        for (kind, fields) in own {
            if series_fields.get(kind).map(Vec::as_slice)
                != Some(&fields.iter().map(|f| f.to_string()).collect::<Vec<_>>()[..])
            {
                return Err(PyValueError::new_err(format!(
                    "the snapshot's {kind} fields are not the compiled core's: rebuild the core (pip install ./core)"
                )));
            }
        }
        if series_fields.len() != own.len() {
            return Err(PyValueError::new_err(
                "the snapshot has kinds of series the compiled core lacks",
            ));
        }
        let fields = campaign_fields
            .iter()
            .map(|name| match name.as_str() {
                "id" => Field::Id,
                "series" => Field::Series,
                "rule_states" => Field::RuleStates,
                other => Field::Plain(PyString::intern(py, other).unbind()),
            })
            .collect();
        let rule_state_fields = rule_state_fields
            .iter()
            .map(|name| PyString::intern(py, name).unbind())
            .collect();
        Ok(Self {
            fields,
            rule_state_fields,
        })
    }

    /// The campaign's mirror, encoded.
    fn encode<'py>(
        &self,
        py: Python<'py>,
        campaign_id: &Bound<'py, PyString>,
        state: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(1024);
        self.write(py, &mut out, campaign_id, state)?;
        Ok(PyBytes::new(py, &out))
    }

    /// The campaigns `order[start:end]` encoded one after the other, as snapshot.py's `_encoded_run`: each taken
    /// out of `left` (id -> state) and encoded, or, encoded already, taken out of `early` (id -> its bytes).
    fn encode_run<'py>(
        &self,
        py: Python<'py>,
        order: &Bound<'py, PyList>,
        start: usize,
        end: usize,
        left: &Bound<'py, PyDict>,
        early: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::with_capacity(1024 * end.saturating_sub(start).min(4096)); // grows past 4 MiB
        for campaign_id in order.get_slice(start, end).iter() {
            if let Some(state) = left.get_item(&campaign_id)? {
                left.del_item(&campaign_id)?;
                self.write(py, &mut out, campaign_id.cast::<PyString>()?, &state)?;
            } else {
                let encoded = early.get_item(&campaign_id)?.ok_or_else(|| {
                    PyValueError::new_err(format!(
                        "campaign {campaign_id} is neither left nor encoded"
                    ))
                })?;
                out.extend_from_slice(encoded.cast::<PyBytes>()?.as_bytes());
                early.del_item(&campaign_id)?;
            }
        }
        Ok(PyBytes::new(py, &out))
    }
}

impl CampaignEncoder {
    fn write<'py>(
        &self,
        py: Python<'py>,
        out: &mut Vec<u8>,
        campaign_id: &Bound<'py, PyString>,
        state: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        array(out, self.fields.len())?;
        for field in &self.fields {
            match field {
                Field::Id => text(out, campaign_id)?,
                Field::Series => {
                    let slots = state.getattr(pyo3::intern!(py, "series"))?;
                    let slots = slots.cast::<PyList>()?;
                    array(out, slots.len())?;
                    for slot in slots.iter() {
                        series(py, out, &slot)?;
                    }
                }
                Field::RuleStates => {
                    let states = state.getattr(pyo3::intern!(py, "rule_states"))?;
                    let states = states.cast::<PyDict>()?;
                    let len = u32::try_from(states.len())
                        .map_err(|_| PyValueError::new_err("too many rule states"))?;
                    encode::write_map_len(out, len).expect(INFALLIBLE);
                    for (name, rule_state) in states.iter() {
                        text(out, name.cast::<PyString>()?)?;
                        array(out, self.rule_state_fields.len())?;
                        for field in &self.rule_state_fields {
                            value(out, &rule_state.getattr(field.bind(py))?)?;
                        }
                    }
                }
                Field::Plain(name) => value(out, &state.getattr(name.bind(py))?)?,
            }
        }
        Ok(())
    }
}

// -- restoring: a series from its snapshot mirror, checked as snapshot.py's `_check_series` checks it ----------

/// Events a series counts at most (snapshot.py `_MAX_COUNT`): more than any log holds, exact in an f64 and i64.
pub(crate) const MAX_COUNT: i64 = 1 << 53;

pub(crate) fn corrupt(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// snapshot.py `_time`: unset (-inf or None), or not after the partition's clock (NaN never).
pub(crate) fn check_time(value: Option<f64>, clock: f64, what: &str) -> PyResult<()> {
    let Some(value) = value else { return Ok(()) };
    // NaN is past every clock: only a time at or before it is taken
    if value == f64::NEG_INFINITY || matches!(value.partial_cmp(&clock), Some(Less | Equal)) {
        return Ok(());
    }
    Err(corrupt(format!(
        "{what} ({value}) is past the partition's clock ({clock})"
    )))
}

/// The mirror holds no more sample ids than a series keeps.
pub(crate) fn check_samples<T>(samples: &crate::Samples<T>) -> PyResult<()> {
    if samples
        .as_ref()
        .is_some_and(|samples| samples.len() > crate::SAMPLE_IDS)
    {
        return Err(corrupt(format!(
            "more than {} sample ids",
            crate::SAMPLE_IDS
        )));
    }
    Ok(())
}

/// A series of the slot's kind, or why not (snapshot.py's message).
pub(crate) fn same_kind<'a, 'py, T: pyo3::PyClass + pyo3::type_object::PyTypeCheck>(
    mirror_kind: &str,
    fresh: &'a Bound<'py, PyAny>,
) -> PyResult<&'a Bound<'py, T>> {
    fresh.cast::<T>().map_err(|_| {
        let name = fresh
            .get_type()
            .name()
            .map(|name| name.to_string())
            .unwrap_or_default();
        corrupt(format!("a {mirror_kind} where the rules keep a {name}"))
    })
}

/// Each kind of series' fields, in the order of the Python types (and their snapshot mirrors) they stand in
/// for: a core built from other sources differs (kinds.py then runs the Python engine).
#[pyfunction]
pub(crate) fn series_fields() -> HashMap<&'static str, Vec<&'static str>> {
    HashMap::from([
        ("sliding", SlidingCount::FIELDS.to_vec()),
        ("last", LastN::FIELDS.to_vec()),
        ("cusum", Cusum::FIELDS.to_vec()),
    ])
}

/// A campaign's series from their part of its snapshot (`data`: the msgpack array of a slot's series mirror or nil,
/// one per slot), each checked as snapshot.py's `_check_series` checks it against `fresh[slot]`, one the slot's
/// rule makes (None: no rule keeps a series in that slot). Read as msgspec reads the mirrors (reader.rs), without
/// making them: one call per campaign.
#[pyfunction]
pub(crate) fn restored_campaign_series<'py>(
    py: Python<'py>,
    data: PyBuffer<u8>, // a msgspec.Raw of the campaign's snapshot, or bytes
    fresh: &Bound<'py, PyList>,
    clock: f64,
    max_last: i64,
) -> PyResult<Bound<'py, PyList>> {
    let data = data.to_vec(py)?;
    let mut reader = Reader::new(&data);
    let slots = reader.array()?;
    if slots != fresh.len() {
        return Err(corrupt(format!("{slots} series for {} slots", fresh.len())));
    }
    let restored = PyList::empty(py);
    for fresh in fresh.iter() {
        if reader.nil() {
            restored.append(py.None())?;
            continue;
        }
        let len = reader.array()?;
        let tag = if len == 0 { None } else { Some(reader.int()?) };
        let fields = match tag {
            Some(0) => SlidingCount::FIELDS.len(),
            Some(1) => LastN::FIELDS.len(),
            Some(2) => Cusum::FIELDS.len(),
            _ => return Err(corrupt(format!("a series tagged {tag:?}"))),
        };
        if len < 1 + fields {
            return Err(corrupt(format!(
                "a series of {} fields, not {fields}",
                len - 1
            )));
        }
        let series = match tag {
            Some(0) => into_any(py, SlidingCount::restored(py, &mut reader, &fresh, clock)),
            Some(1) => into_any(
                py,
                LastN::restored(py, &mut reader, &fresh, clock, max_last),
            ),
            _ => into_any(py, Cusum::restored(py, &mut reader, &fresh, clock)),
        }?;
        reader.skip(len - 1 - fields)?; // msgspec skips what an array-like struct holds past its fields
        restored.append(series)?;
    }
    if !reader.at_end() {
        return Err(corrupt("bytes after a campaign's series"));
    }
    Ok(restored)
}

fn into_any<'py, T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>>>(
    py: Python<'py>,
    series: PyResult<T>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(Bound::new(py, series?)?.into_any())
}
