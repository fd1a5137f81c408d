//! windows.py `skips_late_per` and `skips_of`: the sends a `last:` or `cusum` series skips as history delivered again,
//! and their outcomes.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use crate::ids::id_hash;
use crate::numbers::py_min;
use crate::reader::Reader;
use crate::snapshot;
use crate::Samples;

/// windows.py LATE_PER_SECONDS: a per-event this far behind the newest one counted is skipped.
const LATE_PER_SECONDS: f64 = 900.0;
/// windows.py SKIPPED_IDS: the message ids of the latest skipped per-events kept.
const SKIPPED_IDS: usize = 256;

/// The two trailing fields of a `LastN` or a `Cusum`: `newest_per` (NaN: the series counts every send, as an engine of
/// scopes' do) and `skipped`.
pub(crate) struct LateSends {
    newest_per: f64,       // the newest per-event time counted
    skipped: Samples<i32>, // the latest skipped per-events' message ids, hashed, newest last
}

impl LateSends {
    pub(crate) fn new(newest_per: f64, skipped: Option<Vec<i32>>) -> Self {
        Self {
            newest_per,
            skipped: skipped.map(Box::new),
        }
    }

    /// Whether the series skips this per-event; if it does, its message id is kept, and otherwise the newest time
    /// moves to its time, at most LATE_PER_SECONDS past `previous` (the per-event counted before it; -inf: none).
    pub(crate) fn skips_per(
        &mut self,
        time: f64,
        message_id: Option<&Bound<'_, PyString>>,
        previous: f64,
    ) -> PyResult<bool> {
        if time < self.newest_per - LATE_PER_SECONDS {
            if message_id.is_some() {
                let skipped = self.skipped.get_or_insert_with(Box::default);
                skipped.push(id_hash(message_id)?);
                if skipped.len() > SKIPPED_IDS {
                    skipped.remove(0);
                }
            }
            return Ok(true);
        }
        let vouched = py_min(time, previous + LATE_PER_SECONDS);
        if vouched > self.newest_per {
            self.newest_per = vouched;
        }
        Ok(false)
    }

    /// Whether an of-event is the outcome of a per-event the series skipped.
    pub(crate) fn skips_of(&self, message_id: Option<&Bound<'_, PyString>>) -> PyResult<bool> {
        match (&self.skipped, message_id) {
            (Some(skipped), Some(_)) => Ok(skipped.contains(&id_hash(message_id)?)),
            _ => Ok(false),
        }
    }

    /// Both fields as msgspec writes them.
    pub(crate) fn write_snapshot(&self, out: &mut Vec<u8>) -> PyResult<()> {
        snapshot::float(out, self.newest_per);
        snapshot::samples(out, &self.skipped, |out, hashed| {
            snapshot::int(out, i64::from(*hashed));
            Ok(())
        })
    }

    /// Both fields from a snapshot, as read (`check` checks them).
    pub(crate) fn read(fields: &mut Reader<'_>) -> PyResult<Self> {
        let newest_per = fields.float()?;
        let skipped = fields.samples(|hashed| {
            i32::try_from(hashed.int()?).map_err(|_| {
                snapshot::corrupt(format!(
                    "more than {SKIPPED_IDS} skipped sends, or not as hashed"
                ))
            })
        })?;
        Ok(Self {
            newest_per,
            skipped,
        })
    }

    /// As snapshot.py's `_check_series` checks them: skipping as the slot's fresh series does (`fresh`: NaN for one
    /// that counts every send), the newest send not past the clock, no more ids than kept.
    pub(crate) fn check(&self, fresh: &Self, clock: f64) -> PyResult<()> {
        if self.newest_per.is_nan() != fresh.newest_per.is_nan() {
            return Err(snapshot::corrupt(
                "a series that skips late sends where the rules keep one that does not, or back",
            ));
        }
        let newest = (!self.newest_per.is_nan()).then_some(self.newest_per);
        snapshot::check_time(newest, clock, "a series' newest send")?;
        if self.skipped.as_ref().is_some_and(|s| s.len() > SKIPPED_IDS) {
            return Err(snapshot::corrupt(format!(
                "more than {SKIPPED_IDS} skipped sends, or not as hashed"
            )));
        }
        Ok(())
    }

    pub(crate) fn newest_per(&self) -> f64 {
        self.newest_per
    }

    pub(crate) fn skipped<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.skipped
            .as_ref()
            .map(|skipped| PyList::new(py, skipped.iter()))
            .transpose()
    }
}
