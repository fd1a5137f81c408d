//! windows.py `SlidingCount`: how many matching events fell within the last `window` seconds of event
//! time, in 60 buckets. The same fields, the same float bucket indexes, the same answers.

use pyo3::exceptions::{PyIndexError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::arrays::{from_sequence, to_array};
use crate::numbers::floor_div;
use crate::reader::Reader;
use crate::snapshot;
use crate::{keep_latest, make_room, Samples};

const BUCKETS_PER_WINDOW: f64 = 60.0;
const MAX_COUNT_F: f64 = snapshot::MAX_COUNT as f64;
/// `older` grows by one bucket (its index and count) at a time: a quarter of the windows hold seven to nineteen.
const BUCKET_STEP: usize = 2;

#[pyclass(module = "guard_core")]
pub struct SlidingCount {
    #[pyo3(get)]
    width: f64,
    #[pyo3(get)]
    keep_samples: bool,
    older: Vec<f64>, // index, count, index, count, ...
    #[pyo3(get)]
    newest: f64,
    #[pyo3(get)]
    newest_count: i64,
    #[pyo3(get)]
    total: i64,
    samples: Samples<(f64, Py<PyString>)>, // (bucket index, message id), newest last
}

impl SlidingCount {
    fn start_bucket(&mut self, index: f64) {
        let oldest_kept = index - BUCKETS_PER_WINDOW;
        if self.newest <= oldest_kept
            || self
                .older
                .first()
                .is_some_and(|&first| first <= oldest_kept)
        {
            self.expire(oldest_kept);
        }
        if self.newest_count != 0 {
            make_room(&mut self.older, 2, BUCKET_STEP);
            self.older.push(self.newest);
            self.older.push(self.newest_count as f64);
        }
        self.newest = index;
        self.newest_count = 1;
    }

    fn add_late(&mut self, index: f64, now: f64) -> bool {
        let oldest_kept = floor_div(now, self.width) - BUCKETS_PER_WINDOW;
        if index <= oldest_kept {
            return false;
        }
        self.expire(oldest_kept);
        if index > self.newest {
            self.start_bucket(index);
            return true;
        }
        let older = &mut self.older;
        make_room(older, 2, BUCKET_STEP);
        let mut position = older.len();
        while position >= 2 {
            position -= 2;
            if older[position] == index {
                older[position + 1] += 1.0;
                return true;
            }
            if older[position] < index {
                older.splice(position + 2..position + 2, [index, 1.0]);
                return true;
            }
        }
        older.splice(0..0, [index, 1.0]);
        true
    }

    fn expire(&mut self, oldest_kept: f64) {
        if self
            .older
            .first()
            .is_some_and(|&first| first <= oldest_kept)
        {
            let mut cut = 0;
            while cut < self.older.len() && self.older[cut] <= oldest_kept {
                self.total -= self.older[cut + 1] as i64;
                cut += 2;
            }
            self.older.drain(..cut);
        }
        if self.newest <= oldest_kept && self.newest_count != 0 {
            self.total -= self.newest_count;
            self.newest_count = 0;
        }
    }

    /// The Python type's fields, in their order (snapshot.py's mirror).
    pub(crate) const FIELDS: [&'static str; 7] = [
        "width",
        "keep_samples",
        "older",
        "newest",
        "newest_count",
        "total",
        "samples",
    ];

    /// Its snapshot mirror (tag 0), as msgspec writes it.
    pub(crate) fn write_snapshot(&self, py: Python<'_>, out: &mut Vec<u8>) -> PyResult<()> {
        snapshot::array(out, 1 + Self::FIELDS.len())?;
        snapshot::int(out, 0);
        snapshot::float(out, self.width);
        snapshot::boolean(out, self.keep_samples);
        snapshot::numbers(out, &self.older, f64::to_le_bytes)?;
        snapshot::float(out, self.newest);
        snapshot::int(out, self.newest_count);
        snapshot::int(out, self.total);
        snapshot::samples(out, &self.samples, |out, (index, id)| {
            snapshot::array(out, 2)?;
            snapshot::float(out, *index);
            snapshot::text(out, id.bind(py))
        })
    }

    /// A series from its snapshot mirror's fields (`fields`, past its tag), checked as snapshot.py's `_check_series`
    /// checks it: the window of the slot's rule (`fresh`), at most its buckets, in order, whole counts adding up,
    /// none past the clock.
    pub(crate) fn restored(
        py: Python<'_>,
        fields: &mut Reader<'_>,
        fresh: &Bound<'_, PyAny>,
        clock: f64,
    ) -> PyResult<Self> {
        let fresh = snapshot::same_kind::<Self>("SlidingCount", fresh)?.borrow();
        let restored = Self {
            width: fields.float()?,
            keep_samples: fields.boolean()?,
            older: fields.numbers(f64::from_le_bytes)?,
            newest: fields.float()?,
            newest_count: fields.int()?,
            total: fields.int()?,
            samples: fields.samples(|sample| {
                sample.pair(Reader::float, |id| {
                    Ok(PyString::new(py, id.text()?).unbind())
                })
            })?,
        };
        if restored.width != fresh.width || restored.keep_samples != fresh.keep_samples {
            return Err(snapshot::corrupt("a window of another length"));
        }
        let older = &restored.older;
        if older.len() % 2 != 0 || older.len() > 2 * BUCKETS_PER_WINDOW as usize {
            return Err(snapshot::corrupt(format!(
                "{} bucket fields in a window of {BUCKETS_PER_WINDOW}",
                older.len()
            )));
        }
        let bucket_clock = floor_div(clock, restored.width);
        let indexes: Vec<f64> = older
            .iter()
            .step_by(2)
            .copied()
            .chain([restored.newest])
            .collect();
        for &index in indexes.iter().rev() {
            snapshot::check_time(Some(index), bucket_clock, "a window's bucket")?;
        }
        if !indexes.windows(2).all(|pair| pair[1] > pair[0]) {
            return Err(snapshot::corrupt("a window's buckets out of order"));
        }
        let counts = older.iter().skip(1).step_by(2);
        if !counts
            .clone()
            .all(|&count| (1.0..=MAX_COUNT_F).contains(&count) && count == count.trunc())
        {
            return Err(snapshot::corrupt(
                "a window's bucket holds no whole number of events",
            ));
        }
        let counted: i64 = counts.map(|&count| count as i64).sum();
        if !(0..=snapshot::MAX_COUNT).contains(&restored.newest_count)
            || restored.total != restored.newest_count + counted
        {
            return Err(snapshot::corrupt("a window's counts do not add up"));
        }
        snapshot::check_samples(&restored.samples)?;
        Ok(restored)
    }

    fn oldest_kept(&self, now: f64) -> f64 {
        floor_div(now, self.width) - BUCKETS_PER_WINDOW
    }
}

#[pymethods]
impl SlidingCount {
    /// Which kind of series (the Python types say the same): how the engine tells them apart.
    #[classattr]
    fn kind() -> &'static str {
        "sliding"
    }

    #[new]
    #[pyo3(signature = (width, keep_samples=true, older=None, newest=f64::NEG_INFINITY, newest_count=0, total=0, samples=None))]
    fn new(
        width: f64,
        keep_samples: bool,
        older: Option<&Bound<'_, PyAny>>,
        newest: f64,
        newest_count: i64,
        total: i64,
        samples: Option<Vec<(f64, Py<PyString>)>>,
    ) -> PyResult<Self> {
        let older: Vec<f64> = match older {
            Some(values) => from_sequence(values)?,
            None => Vec::new(),
        };
        if older.len() % 2 != 0 {
            // (index, count) pairs: an odd number would leave an index without its count
            return Err(PyValueError::new_err(format!(
                "{} bucket fields: not pairs",
                older.len()
            )));
        }
        Ok(Self {
            width,
            keep_samples,
            older,
            newest,
            newest_count,
            total,
            samples: samples.map(Box::new),
        })
    }

    #[classmethod]
    #[pyo3(signature = (window, keep_samples=true))]
    fn over(_cls: &Bound<'_, pyo3::types::PyType>, window: f64, keep_samples: bool) -> Self {
        Self {
            width: window / BUCKETS_PER_WINDOW,
            keep_samples,
            older: Vec::new(),
            newest: f64::NEG_INFINITY,
            newest_count: 0,
            total: 0,
            samples: None,
        }
    }

    /// Count one event; False when it is older than the window ending at `now` (not counted).
    fn add(&mut self, time: f64, message_id: Option<Bound<'_, PyString>>, now: f64) -> bool {
        let index = floor_div(time, self.width);
        if time >= now {
            if index == self.newest {
                self.newest_count += 1;
            } else {
                self.start_bucket(index);
            }
        } else if index == self.newest && index > floor_div(now, self.width) - BUCKETS_PER_WINDOW {
            self.newest_count += 1;
        } else if !self.add_late(index, now) {
            return false;
        }
        self.total += 1;
        if let Some(id) = message_id {
            if self.keep_samples {
                keep_latest(&mut self.samples, (index, id.unbind()));
            }
        }
        true
    }

    fn count_at(&mut self, now: f64) -> i64 {
        let oldest_kept = self.oldest_kept(now);
        self.expire(oldest_kept);
        self.total
    }

    fn weighted_count(&mut self, now: f64, weights: Vec<f64>) -> PyResult<f64> {
        if weights.is_empty() {
            return Err(PyIndexError::new_err("no weights"));
        }
        let newest = floor_div(now, self.width);
        self.expire(newest - BUCKETS_PER_WINDOW);
        let last = weights.len() as i64 - 1;
        // int() of Python truncates toward zero, as `as` does
        let weight = |index: f64| weights[((newest - index) as i64).max(0).min(last) as usize];
        let mut total = 0.0;
        for pair in self.older.chunks_exact(2) {
            total += pair[1] * weight(pair[0]);
        }
        if self.newest_count != 0 {
            total += self.newest_count as f64 * weight(self.newest);
        }
        Ok(total)
    }

    fn sample_ids<'py>(&self, py: Python<'py>, now: f64) -> PyResult<Bound<'py, PyTuple>> {
        let oldest_kept = self.oldest_kept(now);
        let kept = self
            .samples
            .iter()
            .flat_map(|samples| samples.iter())
            .filter(|(index, _)| *index > oldest_kept);
        PyTuple::new(py, kept.map(|(_, id)| id.bind(py)).collect::<Vec<_>>())
    }

    fn start_time(&self) -> Option<f64> {
        match self.older.first() {
            Some(&index) => Some(index * self.width),
            None if self.newest_count != 0 => Some(self.newest * self.width),
            None => None,
        }
    }

    #[setter]
    fn set_keep_samples(&mut self, keep_samples: bool) {
        self.keep_samples = keep_samples;
    }

    #[getter]
    fn older<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_array(py, "d", &self.older)
    }

    #[getter]
    fn samples<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.samples
            .as_ref()
            .map(|samples| PyList::new(py, samples.iter().map(|(index, id)| (*index, id.bind(py)))))
            .transpose()
    }

    #[setter]
    fn set_samples(&mut self, samples: Option<Vec<(f64, Py<PyString>)>>) {
        self.samples = samples.map(Box::new);
    }
}
