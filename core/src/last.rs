//! windows.py `LastN`: of-events among a campaign's last N per-events (e.g. hard bounces among the last
//! 200 sends), for any N up to `size`. The same rings, positions and hashes as the Python one.

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::arrays::{from_sequence, to_array};
use crate::ids::id_hash;
use crate::numbers::floor_div;
use crate::reader::Reader;
use crate::skipped::LateSends;
use crate::snapshot;
use crate::{keep_latest, make_room, Samples};

const INT32: i64 = (1 << 31) - 1;
/// The rings and the outcomes grow by this many values at a time, up to the ring's size.
const RING_STEP: usize = 2;

#[pyclass(module = "guard_core")]
pub struct LastN {
    #[pyo3(get)]
    size: i64,
    #[pyo3(get)]
    per_seen: i64,
    of_positions: Vec<i64>, // per_seen at each of-event, in order (their count is the Python type's `total`)
    samples: Samples<(i64, Py<PyString>)>, // (per_seen, message id), newest last
    per_times: Vec<i32>, // the last `size` per-events' times, by position % size, in seconds from `time_base`
    #[pyo3(get)]
    time_base: f64,
    per_ids: Vec<i32>, // their message ids, hashed to 32 bits, by position % size
    late: LateSends,   // `newest_per` and `skipped`: the sends skipped as history delivered again
}

fn bisect_right(values: &[i64], value: i64) -> usize {
    values.partition_point(|&kept| kept <= value)
}

impl LastN {
    /// The Python type's fields, in their order (snapshot.py's mirror).
    pub(crate) const FIELDS: [&'static str; 10] = [
        "size",
        "per_seen",
        "of_positions",
        "total",
        "samples",
        "per_times",
        "time_base",
        "per_ids",
        "newest_per",
        "skipped",
    ];

    /// Its snapshot mirror (tag 1), as msgspec writes it.
    pub(crate) fn write_snapshot(&self, py: Python<'_>, out: &mut Vec<u8>) -> PyResult<()> {
        snapshot::array(out, 1 + Self::FIELDS.len())?;
        snapshot::int(out, 1);
        snapshot::int(out, self.size);
        snapshot::int(out, self.per_seen);
        snapshot::numbers(out, &self.of_positions, i64::to_le_bytes)?;
        snapshot::int(out, self.of_positions.len() as i64);
        snapshot::samples(out, &self.samples, |out, (position, id)| {
            snapshot::array(out, 2)?;
            snapshot::int(out, *position);
            snapshot::text(out, id.bind(py))
        })?;
        snapshot::numbers(out, &self.per_times, i32::to_le_bytes)?;
        snapshot::float(out, self.time_base);
        snapshot::numbers(out, &self.per_ids, i32::to_le_bytes)?;
        self.late.write_snapshot(out)
    }

    /// A series from its snapshot mirror's fields (`fields`, past its tag), checked as snapshot.py's `_check_series`
    /// checks it: a size a rule may ask for (a reload keeps a ring longer than the new rules ask), the sends it keeps,
    /// its outcomes in order; then grown to its rules' size, as snapshot.py grows it.
    pub(crate) fn restored(
        py: Python<'_>,
        fields: &mut Reader<'_>,
        fresh: &Bound<'_, PyAny>,
        clock: f64,
        max_last: i64,
    ) -> PyResult<Self> {
        let fresh = snapshot::same_kind::<Self>("LastN", fresh)?.borrow();
        let (size, per_seen) = (fields.int()?, fields.int()?);
        let of_positions = fields.numbers(i64::from_le_bytes)?;
        let total = fields.int()?;
        let mut restored = Self {
            size,
            per_seen,
            of_positions,
            samples: fields.samples(|sample| {
                sample.pair(Reader::int, |id| Ok(PyString::new(py, id.text()?).unbind()))
            })?,
            per_times: fields.numbers(i32::from_le_bytes)?,
            time_base: fields.float()?,
            per_ids: fields.numbers(i32::from_le_bytes)?,
            late: LateSends::read(fields)?,
        };
        let per_seen = restored.per_seen;
        if !(0..=snapshot::MAX_COUNT).contains(&per_seen) {
            return Err(snapshot::corrupt(format!(
                "a count window of {per_seen} sends"
            )));
        }
        let kept = per_seen.min(restored.size);
        if !(1..=max_last).contains(&restored.size)
            || restored.per_times.len() as i64 != kept
            || restored.per_ids.len() as i64 != kept
        {
            return Err(snapshot::corrupt(
                "a count window of a size no rule can ask for, or holding another number of sends",
            ));
        }
        let positions = &restored.of_positions;
        let in_order = positions
            .windows(2)
            .all(|pair| 0 <= pair[0] && pair[0] <= pair[1]);
        let last_seen = positions
            .last()
            .is_none_or(|&last| 0 <= last && last <= per_seen);
        if total != positions.len() as i64 || !in_order || !last_seen {
            return Err(snapshot::corrupt("a count window's outcomes do not add up"));
        }
        let quoted = restored.samples.iter().flat_map(|samples| samples.iter());
        if quoted
            .clone()
            .any(|(position, _)| !(0 <= *position && *position <= per_seen))
        {
            return Err(snapshot::corrupt(
                "a count window quotes a send it never saw",
            ));
        }
        if per_seen != 0 && !restored.time_base.is_finite() {
            return Err(snapshot::corrupt(format!(
                "a count window's first send at {}",
                restored.time_base
            )));
        }
        let first_send = (per_seen != 0).then_some(restored.time_base);
        snapshot::check_time(first_send, clock, "a count window's first send")?;
        restored.late.check(&fresh.late, clock)?;
        snapshot::check_samples(&restored.samples)?;
        // shorter than its rules ask: from a guard whose reloads kept it so
        restored.grow(fresh.size);
        Ok(restored)
    }

    fn send_of(&self, message_id: Option<&Bound<'_, PyString>>) -> PyResult<i64> {
        if message_id.is_none() || self.per_seen == 0 {
            return Ok(self.per_seen);
        }
        let hashed = id_hash(message_id)?;
        let Some(slot) = self.per_ids.iter().position(|&id| id == hashed) else {
            return Ok(self.per_seen);
        };
        let latest = self.per_seen - 1;
        Ok(latest - (latest - slot as i64).rem_euclid(self.size) + 1)
    }
}

#[pymethods]
impl LastN {
    /// Which kind of series (the Python types say the same): how the engine tells them apart.
    #[classattr]
    fn kind() -> &'static str {
        "last"
    }

    #[new]
    #[pyo3(signature = (size, per_seen=0, of_positions=None, total=0, samples=None, per_times=None, time_base=0.0, per_ids=None, newest_per=f64::NEG_INFINITY, skipped=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        size: i64,
        per_seen: i64,
        of_positions: Option<&Bound<'_, PyAny>>,
        total: i64,
        samples: Option<Vec<(i64, Py<PyString>)>>,
        per_times: Option<&Bound<'_, PyAny>>,
        time_base: f64,
        per_ids: Option<&Bound<'_, PyAny>>,
        newest_per: f64,
        skipped: Option<Vec<i32>>,
    ) -> PyResult<Self> {
        if size < 1 {
            return Err(PyValueError::new_err(format!(
                "a count window of size {size}"
            )));
        }
        let restored = Self {
            size,
            per_seen,
            of_positions: of_positions.map(from_sequence).unwrap_or(Ok(Vec::new()))?,
            samples: samples.map(Box::new),
            per_times: per_times.map(from_sequence).unwrap_or(Ok(Vec::new()))?,
            time_base,
            per_ids: per_ids.map(from_sequence).unwrap_or(Ok(Vec::new()))?,
            late: LateSends::new(newest_per, skipped),
        };
        // what counting always keeps true, and indexing relies on
        let kept = per_seen.min(size);
        if per_seen < 0
            || restored.per_times.len() as i64 != kept
            || restored.per_ids.len() as i64 != kept
        {
            return Err(PyValueError::new_err(
                "a count window holding another number of sends than it saw",
            ));
        }
        if !restored
            .of_positions
            .windows(2)
            .all(|pair| pair[0] <= pair[1])
            || total != restored.of_positions.len() as i64
        {
            return Err(PyValueError::new_err(
                "a count window's outcomes out of order, or other than its total",
            ));
        }
        Ok(restored)
    }

    #[pyo3(signature = (time, message_id, now))]
    fn add_per(
        &mut self,
        time: f64,
        message_id: Option<Bound<'_, PyString>>,
        now: f64,
    ) -> PyResult<bool> {
        let _ = now;
        let position = self.per_seen;
        let previous = if position == 0 {
            f64::NEG_INFINITY
        } else {
            self.time_base + f64::from(self.per_times[((position - 1) % self.size) as usize])
        };
        if self.late.skips_per(time, message_id.as_ref(), previous)? {
            return Ok(false);
        }
        if position == 0 {
            self.time_base = floor_div(time, 1.0);
        }
        let second = floor_div(time - self.time_base, 1.0);
        // a send decades away from the first: kept at the edge
        let second = if second > INT32 as f64 {
            INT32
        } else if second < -INT32 as f64 {
            -INT32
        } else {
            second as i64
        };
        let hashed = id_hash(message_id.as_ref())?;
        if position < self.size {
            let step = RING_STEP.min((self.size - position) as usize);
            make_room(&mut self.per_times, 1, step);
            make_room(&mut self.per_ids, 1, step);
            self.per_times.push(second as i32);
            self.per_ids.push(hashed);
        } else {
            let slot = (position % self.size) as usize;
            self.per_times[slot] = second as i32;
            self.per_ids[slot] = hashed;
        }
        self.per_seen = position
            .checked_add(1)
            .ok_or_else(|| PyOverflowError::new_err("a count window of 2**63 sends"))?;
        let oldest_gone = self.per_seen - self.size;
        if self
            .of_positions
            .first()
            .is_some_and(|&first| first <= oldest_gone)
        {
            let cut = bisect_right(&self.of_positions, oldest_gone);
            self.of_positions.drain(..cut);
        }
        Ok(true)
    }

    #[pyo3(signature = (time, message_id, now))]
    fn add_of(
        &mut self,
        time: f64,
        message_id: Option<Bound<'_, PyString>>,
        now: f64,
    ) -> PyResult<bool> {
        let _ = (time, now);
        if self.late.skips_of(message_id.as_ref())? {
            return Ok(false);
        }
        let position = self.send_of(message_id.as_ref())?;
        let positions = &mut self.of_positions;
        make_room(positions, 1, RING_STEP);
        if position == self.per_seen || positions.last().is_none_or(|&last| last <= position) {
            positions.push(position);
        } else {
            // the outcome of an earlier send: among the counted, in order of position
            let at = bisect_right(positions, position);
            positions.insert(at, position);
        }
        if let Some(id) = message_id {
            keep_latest(&mut self.samples, (position, id.unbind()));
        }
        Ok(true)
    }

    /// Room for the last `size` per-events, where it keeps fewer (windows.py `LastN.grow`): the sends it holds are
    /// numbered again from the oldest held, and laid in the ring by their new positions.
    fn grow(&mut self, size: i64) {
        if size <= self.size {
            return;
        }
        let gone = self.per_seen - self.per_seen.min(self.size); // sends counted once, no longer held
        if gone > 0 {
            let oldest = (gone % self.size) as usize; // its slot: the ring is full
            self.per_times.rotate_left(oldest);
            self.per_ids.rotate_left(oldest);
            let cut = bisect_right(&self.of_positions, gone);
            self.of_positions.drain(..cut);
            for position in &mut self.of_positions {
                *position -= gone;
            }
            if let Some(samples) = self.samples.as_mut() {
                samples.retain(|(position, _)| *position > gone);
                for (position, _) in samples.iter_mut() {
                    *position -= gone;
                }
                if samples.is_empty() {
                    self.samples = None;
                }
            }
            self.per_seen -= gone;
        }
        self.size = size;
    }

    /// The of-events counted (windows.py keeps it as a field: read on every event).
    #[getter]
    fn total(&self) -> i64 {
        self.of_positions.len() as i64
    }

    /// (of-events, per-events) within the last `size` per-events, never more per-events than the ring holds.
    fn counts(&self, size: i64) -> (i64, i64) {
        let gone = bisect_right(&self.of_positions, self.per_seen - size) as i64;
        (
            self.of_positions.len() as i64 - gone,
            self.per_seen.min(size).min(self.size),
        )
    }

    /// The time of the earliest of the last `size` per-events the ring holds; None before the first.
    fn start_time(&self, size: i64) -> PyResult<Option<f64>> {
        let counted = self.per_seen.min(size).min(self.size);
        if counted <= 0 {
            return if counted == 0 {
                Ok(None)
            } else {
                Err(PyValueError::new_err("no sends to count"))
            };
        }
        let first = (self.per_seen - counted).rem_euclid(self.size) as usize;
        let end = first + counted as usize;
        let times = &self.per_times;
        let earliest = if end <= times.len() {
            times[first..end].iter().min()
        } else {
            let wrapped = end - self.size as usize;
            times[first..].iter().chain(&times[..wrapped]).min()
        };
        Ok(earliest.map(|&second| self.time_base + second as f64))
    }

    fn sample_ids_within<'py>(&self, py: Python<'py>, size: i64) -> PyResult<Bound<'py, PyTuple>> {
        let oldest_gone = self.per_seen - size.min(self.size);
        let kept = self
            .samples
            .iter()
            .flat_map(|samples| samples.iter())
            .filter(|(position, _)| *position > oldest_gone);
        PyTuple::new(py, kept.map(|(_, id)| id.bind(py)).collect::<Vec<_>>())
    }

    #[getter]
    fn of_positions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_array(py, "q", &self.of_positions)
    }

    #[getter]
    fn per_times<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_array(py, "i", &self.per_times)
    }

    #[getter]
    fn per_ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_array(py, "i", &self.per_ids)
    }

    #[getter]
    fn newest_per(&self) -> f64 {
        self.late.newest_per()
    }

    #[getter]
    fn skipped<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.late.skipped(py)
    }

    #[getter]
    fn samples<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.samples
            .as_ref()
            .map(|samples| {
                PyList::new(
                    py,
                    samples
                        .iter()
                        .map(|(position, id)| (*position, id.bind(py))),
                )
            })
            .transpose()
    }
}
