//! cusum.py `Cusum`: S = max(0, S + x) over a campaign's events as they arrive.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::numbers::py_min;
use crate::reader::Reader;
use crate::skipped::LateSends;
use crate::snapshot;
use crate::{keep_latest, Samples};

#[pyclass(module = "guard_core")]
pub struct Cusum {
    #[pyo3(get)]
    rise: f64,
    #[pyo3(get)]
    fall: f64,
    #[pyo3(get)]
    statistic: f64,
    run_from: f64, // the Python type's `run_from`, NaN for its None (S is 0): a float, where an Option takes two

    #[pyo3(get)]
    run_of: i64,
    #[pyo3(get)]
    run_per: i64,
    samples: Samples<Py<PyString>>, // the latest few `of` message ids of the run, newest last
    late: LateSends, // `newest_per` and `skipped`: the sends skipped as history delivered again
    #[pyo3(get)]
    previous_per: f64, // the latest `per` event time counted (-inf: none yet)
}

impl Cusum {
    /// The Python type's fields, in their order (snapshot.py's mirror).
    pub(crate) const FIELDS: [&'static str; 10] = [
        "rise",
        "fall",
        "statistic",
        "run_from",
        "run_of",
        "run_per",
        "samples",
        "newest_per",
        "skipped",
        "previous_per",
    ];

    /// Its snapshot mirror (tag 2), as msgspec writes it.
    pub(crate) fn write_snapshot(&self, py: Python<'_>, out: &mut Vec<u8>) -> PyResult<()> {
        snapshot::array(out, 1 + Self::FIELDS.len())?;
        snapshot::int(out, 2);
        snapshot::float(out, self.rise);
        snapshot::float(out, self.fall);
        snapshot::float(out, self.statistic);
        match self.run_from() {
            Some(from) => snapshot::float(out, from),
            None => snapshot::nil(out),
        }
        snapshot::int(out, self.run_of);
        snapshot::int(out, self.run_per);
        snapshot::samples(out, &self.samples, |out, id| {
            snapshot::text(out, id.bind(py))
        })?;
        self.late.write_snapshot(out)?;
        snapshot::float(out, self.previous_per);
        Ok(())
    }

    /// A series from its snapshot mirror's fields (`fields`, past its tag), checked as snapshot.py's `_check_series`
    /// checks it: the weights of the slot's rule (`fresh`), a run no longer than a log, a finite statistic, no time
    /// past the clock.
    pub(crate) fn restored(
        py: Python<'_>,
        fields: &mut Reader<'_>,
        fresh: &Bound<'_, PyAny>,
        clock: f64,
    ) -> PyResult<Self> {
        let fresh = snapshot::same_kind::<Self>("Cusum", fresh)?.borrow();
        let (rise, fall, statistic) = (fields.float()?, fields.float()?, fields.float()?);
        let run_from = fields.optional_float()?;
        let restored = Self {
            rise,
            fall,
            statistic,
            run_from: run_from.unwrap_or(f64::NAN), // Some(NaN) is refused below
            run_of: fields.int()?,
            run_per: fields.int()?,
            samples: fields.samples(|id| Ok(PyString::new(py, id.text()?).unbind()))?,
            late: LateSends::read(fields)?,
            previous_per: fields.float()?,
        };
        if restored.rise != fresh.rise || restored.fall != fresh.fall {
            return Err(snapshot::corrupt("a cusum of other weights"));
        }
        let runs = 0..=snapshot::MAX_COUNT;
        if !(runs.contains(&restored.run_of) && runs.contains(&restored.run_per)) {
            return Err(snapshot::corrupt(
                "a cusum's run of more events than a log holds",
            ));
        }
        if !(restored.statistic.is_finite() && restored.statistic >= 0.0) {
            return Err(snapshot::corrupt(format!(
                "a cusum statistic of {}",
                restored.statistic
            )));
        }
        snapshot::check_time(run_from, clock, "a cusum's run")?;
        restored.late.check(&fresh.late, clock)?;
        snapshot::check_time(Some(restored.previous_per), clock, "a cusum's latest send")?;
        snapshot::check_samples(&restored.samples)?;
        Ok(restored)
    }

    fn extend_run(&mut self, time: f64) {
        self.run_from = match self.run_from() {
            None => time,
            Some(from) => py_min(from, time),
        };
    }

    /// The earliest event time in the current run; None while S is 0.
    fn run_from(&self) -> Option<f64> {
        (!self.run_from.is_nan()).then_some(self.run_from)
    }
}

#[pymethods]
impl Cusum {
    /// Which kind of series (the Python types say the same): how the engine tells them apart.
    #[classattr]
    fn kind() -> &'static str {
        "cusum"
    }

    #[new]
    #[pyo3(signature = (rise, fall, statistic=0.0, run_from=None, run_of=0, run_per=0, samples=None, newest_per=f64::NEG_INFINITY, skipped=None, previous_per=f64::NEG_INFINITY))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        rise: f64,
        fall: f64,
        statistic: f64,
        run_from: Option<f64>,
        run_of: i64,
        run_per: i64,
        samples: Option<Vec<Py<PyString>>>,
        newest_per: f64,
        skipped: Option<Vec<i32>>,
        previous_per: f64,
    ) -> PyResult<Self> {
        if run_from.is_some_and(f64::is_nan) {
            return Err(PyValueError::new_err("a cusum's run from NaN"));
        }
        Ok(Self {
            rise,
            fall,
            statistic,
            run_from: run_from.unwrap_or(f64::NAN),
            run_of,
            run_per,
            samples: samples.map(Box::new),
            late: LateSends::new(newest_per, skipped),
            previous_per,
        })
    }

    /// What the engine compares with a rule's level before evaluating it (as a window's count).
    #[getter]
    fn total(&self) -> f64 {
        self.statistic
    }

    #[pyo3(signature = (time, message_id, now))]
    fn add_per(
        &mut self,
        time: f64,
        message_id: Option<Bound<'_, PyString>>,
        now: f64,
    ) -> PyResult<bool> {
        let _ = now;
        if self
            .late
            .skips_per(time, message_id.as_ref(), self.previous_per)?
        {
            return Ok(false);
        }
        self.previous_per = time;
        let statistic = self.statistic + self.fall;
        if statistic <= 0.0 {
            (
                self.statistic,
                self.run_from,
                self.run_of,
                self.run_per,
                self.samples,
            ) = (0.0, f64::NAN, 0, 0, None);
        } else {
            self.statistic = statistic;
            self.run_per += 1;
            self.extend_run(time);
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
        let _ = now;
        if self.late.skips_of(message_id.as_ref())? {
            return Ok(false);
        }
        self.extend_run(time);
        self.statistic += self.rise;
        self.run_of += 1;
        if let Some(id) = message_id {
            keep_latest(&mut self.samples, id.unbind());
        }
        Ok(true)
    }

    #[getter(run_from)]
    fn py_run_from(&self) -> Option<f64> {
        self.run_from()
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
            .map(|samples| PyList::new(py, samples.iter().map(|id| id.bind(py))))
            .transpose()
    }
}
