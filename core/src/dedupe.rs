//! dedupe.py `DedupeStore`: the keys one partition's engine has seen, in generations of its clock,
//! 8 bytes a key in buckets. The same buckets, byte for byte, as the Python store keeps.

use std::collections::VecDeque;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::ids::key_of;
use crate::snapshot;

const GENERATIONS: f64 = 8.0;
const BUCKET_LOAD: u64 = 32;
const MIN_BITS: u32 = 8;
const ENTRY: usize = 8;
const U56: u64 = (1 << 56) - 1;
/// dedupe.py SEALED_GENERATIONS and SEAL_EVERY.
const SEALED_GENERATIONS: usize = 128;
const SEAL_EVERY: f64 = 60.0;

#[derive(Clone, Copy)]
struct Generation {
    tag: u8,
    start: f64,
    newest: f64,
    keys: i64,
}

const DETACHED: Generation = Generation {
    tag: 0,
    start: f64::NEG_INFINITY,
    newest: f64::NEG_INFINITY,
    keys: 0,
};

#[pyclass(module = "guard_core")]
pub struct DedupeStore {
    #[pyo3(get)]
    horizon: f64,
    #[pyo3(get)]
    span: f64,
    #[pyo3(get)]
    max_keys: Option<i64>,
    generation_cap: i64,
    #[pyo3(get)]
    bits: u32,
    buckets: Vec<Vec<u8>>,
    generations: VecDeque<Generation>, // oldest first; the last is the open one, unless `detached`
    // the open generation before the first key (or after a restore that held none): in no list, as
    // the Python store's `_open` is then
    detached: Option<Generation>,
    #[pyo3(get)]
    rotate_at: f64,
    #[pyo3(get)]
    sequence: i64,
    #[pyo3(get)]
    keys: i64,
    #[pyo3(get)]
    evicted: i64,
}

fn bit_length(value: i64) -> u32 {
    64 - value.unsigned_abs().leading_zeros()
}

impl DedupeStore {
    /// The generation tag of the event's key; None when it is not remembered.
    fn tag_of(
        &self,
        campaign_id: &Bound<'_, PyString>,
        signal: &Bound<'_, PyString>,
        message_id: &Bound<'_, PyString>,
    ) -> PyResult<Option<u8>> {
        let fingerprint = key_of(&[campaign_id, signal, message_id])?;
        let index = (fingerprint & ((1u64 << self.bits) - 1)) as usize;
        let stored = &(fingerprint >> 8 & U56).to_le_bytes()[..ENTRY - 1];
        Ok(self.buckets[index]
            .chunks_exact(ENTRY)
            .find(|entry| &entry[..ENTRY - 1] == stored)
            .map(|entry| entry[ENTRY - 1]))
    }

    fn open(&mut self) -> &mut Generation {
        match self.detached.as_mut() {
            Some(generation) => generation,
            None => self.generations.back_mut().expect("an open generation"),
        }
    }

    fn rotate(&mut self, now: f64) {
        let horizon = now - self.horizon;
        while self
            .generations
            .front()
            .is_some_and(|oldest| oldest.newest < horizon)
        {
            let gone = self.generations.pop_front().expect("a generation");
            self.forget(gone);
        }
        if let Some(max_keys) = self.max_keys {
            while !self.generations.is_empty() && self.keys > max_keys - self.generation_cap {
                let gone = self.generations.pop_front().expect("a generation");
                self.evicted += gone.keys;
                self.forget(gone);
            }
        }
        self.sequence += 1;
        self.generations.push_back(Generation {
            tag: self.sequence.rem_euclid(256) as u8,
            start: now,
            newest: now,
            keys: 0,
        });
        self.detached = None;
        self.rotate_at = now + self.span;
    }

    fn forget(&mut self, generation: Generation) {
        self.keys -= generation.keys;
        if generation.keys == 0 {
            return;
        }
        for bucket in &mut self.buckets {
            let leading = bucket
                .chunks_exact(ENTRY)
                .take_while(|entry| entry[ENTRY - 1] == generation.tag)
                .count();
            if leading > 0 {
                bucket.drain(..leading * ENTRY);
                bucket.shrink_to_fit(); // what the budget promises per key (README) holds for held bytes too
            }
        }
    }

    fn grow(&mut self) {
        let bits = self.bits;
        let shift = bits - MIN_BITS;
        let (byte, bit) = ((shift >> 3) as usize, shift & 7);
        let count = self.buckets.len();
        self.buckets.resize_with(count * 2, Vec::new);
        for index in 0..count {
            if self.buckets[index].is_empty() {
                continue;
            }
            let old = std::mem::take(&mut self.buckets[index]);
            let (mut low, mut high) = (Vec::new(), Vec::new());
            for entry in old.chunks_exact(ENTRY) {
                if entry[byte] >> bit & 1 == 1 {
                    &mut high
                } else {
                    &mut low
                }
                .extend_from_slice(entry);
            }
            low.shrink_to_fit();
            high.shrink_to_fit();
            self.buckets[index] = low;
            self.buckets[index | count] = high;
        }
        self.bits = bits + 1;
    }

    fn seen_key(&mut self, fingerprint: u64, now: f64) -> bool {
        if now >= self.rotate_at {
            self.rotate(now);
        }
        let index = (fingerprint & ((1u64 << self.bits) - 1)) as usize;
        let stored = &(fingerprint >> 8 & U56).to_le_bytes()[..ENTRY - 1];
        let bucket = &self.buckets[index];
        if bucket
            .chunks_exact(ENTRY)
            .any(|entry| &entry[..ENTRY - 1] == stored)
        {
            return true;
        }
        let tag = self.open().tag;
        let bucket = &mut self.buckets[index];
        bucket.reserve_exact(ENTRY); // exact, as a bytes object grows: no doubling slack on millions of buckets
        bucket.extend_from_slice(stored);
        bucket.push(tag);
        let open = self.open();
        open.keys += 1;
        open.newest = now;
        let open_keys = open.keys;
        self.keys += 1;
        if open_keys >= self.generation_cap {
            self.rotate(now);
        } else if self.keys as u64 > BUCKET_LOAD << self.bits {
            self.grow();
        }
        false
    }
}

#[pymethods]
impl DedupeStore {
    #[new]
    #[pyo3(signature = (horizon, max_keys=None))]
    fn new(horizon: f64, max_keys: Option<i64>) -> PyResult<Self> {
        if max_keys.is_some_and(|keys| keys < 1) {
            return Err(PyValueError::new_err("max_keys must be at least 1"));
        }
        let generation_cap = match max_keys {
            None => i64::MAX,
            Some(keys) => -(-keys).div_euclid(GENERATIONS as i64),
        };
        let bits = MIN_BITS.max(
            (bit_length(max_keys.unwrap_or(0)) + 1).saturating_sub(bit_length(BUCKET_LOAD as i64)),
        );
        Ok(Self {
            horizon,
            span: horizon / GENERATIONS,
            max_keys,
            generation_cap,
            bits,
            buckets: vec![Vec::new(); 1 << bits],
            generations: VecDeque::new(),
            detached: Some(DETACHED),
            rotate_at: f64::NEG_INFINITY,
            sequence: 0,
            keys: 0,
            evicted: 0,
        })
    }

    /// Whether the key was seen within the horizon; if not, it is remembered from `now`.
    fn seen(&mut self, fingerprint: u64, now: f64) -> bool {
        self.seen_key(fingerprint, now)
    }

    /// `seen` of fingerprints.py's `event_key(campaign_id, signal, message_id)`.
    fn seen_event(
        &mut self,
        campaign_id: &Bound<'_, PyString>,
        signal: &Bound<'_, PyString>,
        message_id: &Bound<'_, PyString>,
        now: f64,
    ) -> PyResult<bool> {
        let fingerprint = key_of(&[campaign_id, signal, message_id])?;
        Ok(self.seen_key(fingerprint, now))
    }

    /// dedupe.py `seal`: a new generation opens now, or with the first key SEAL_EVERY after the open one opened;
    /// false when SEALED_GENERATIONS are alive.
    fn seal(&mut self, now: f64) -> bool {
        let Some(open) = self.generations.back().filter(|_| self.detached.is_none()) else {
            return true;
        };
        if open.keys == 0 {
            return true;
        }
        if self.generations.len() >= SEALED_GENERATIONS {
            return false;
        }
        let (due, newest) = (open.start + SEAL_EVERY, open.newest);
        if now >= due {
            self.rotate(if now >= newest { now } else { newest });
        } else if due < self.rotate_at {
            self.rotate_at = due;
        }
        true
    }

    /// dedupe.py `seen_before`: whether the event's key is remembered from a generation whose newest key came before
    /// `time`. Asks; remembers nothing.
    fn seen_before(
        &self,
        campaign_id: &Bound<'_, PyString>,
        signal: &Bound<'_, PyString>,
        message_id: &Bound<'_, PyString>,
        time: f64,
    ) -> PyResult<bool> {
        let tag = self.tag_of(campaign_id, signal, message_id)?;
        Ok(tag.is_some_and(|tag| {
            self.generations
                .iter()
                .any(|generation| generation.tag == tag && generation.newest < time)
        }))
    }

    /// dedupe.py `seen_before_generation`: whether the event's key is remembered from a generation opened before
    /// generation `sequence` (the open one when an episode began). Asks; remembers nothing.
    fn seen_before_generation(
        &self,
        campaign_id: &Bound<'_, PyString>,
        signal: &Bound<'_, PyString>,
        message_id: &Bound<'_, PyString>,
        sequence: i64,
    ) -> PyResult<bool> {
        let tag = self.tag_of(campaign_id, signal, message_id)?;
        // generations are consecutive, the open one last
        let oldest = self.sequence - self.generations.len() as i64 + 1;
        Ok(tag.is_some_and(|tag| {
            self.generations
                .iter()
                .zip(oldest..)
                .any(|(generation, number)| generation.tag == tag && number < sequence)
        }))
    }

    /// The buckets, as the Python store keeps them (for a snapshot).
    fn buckets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(
            py,
            self.buckets.iter().map(|bucket| PyBytes::new(py, bucket)),
        )
    }

    /// The store's part of a snapshot: snapshot.py's `_Dedupe` mirror as msgspec writes it, given its field
    /// names and its generations' (checked: a core built for another snapshot format is refused).
    fn snapshot_bytes<'py>(
        &self,
        py: Python<'py>,
        fields: Vec<String>,
        generation_fields: Vec<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let own = [
            "bits",
            "buckets",
            "generations",
            "rotate_at",
            "sequence",
            "keys",
            "evicted",
        ];
        if fields != own || generation_fields != ["tag", "start", "newest", "keys"] {
            return Err(PyValueError::new_err(
                "the snapshot's dedupe fields are not the compiled core's: rebuild the core (pip install ./core)",
            ));
        }
        let size: usize = self.buckets.iter().map(|bucket| bucket.len() + 5).sum();
        let mut out = Vec::with_capacity(size + 64 * (self.generations.len() + 1));
        snapshot::array(&mut out, own.len())?;
        snapshot::int(&mut out, i64::from(self.bits));
        snapshot::array(&mut out, self.buckets.len())?;
        for bucket in &self.buckets {
            snapshot::bytes(&mut out, bucket);
        }
        snapshot::array(&mut out, self.generations.len())?;
        for generation in &self.generations {
            snapshot::array(&mut out, 4)?;
            snapshot::int(&mut out, i64::from(generation.tag));
            snapshot::float(&mut out, generation.start);
            snapshot::float(&mut out, generation.newest);
            snapshot::int(&mut out, generation.keys);
        }
        snapshot::float(&mut out, self.rotate_at);
        snapshot::int(&mut out, self.sequence);
        snapshot::int(&mut out, self.keys);
        snapshot::int(&mut out, self.evicted);
        Ok(PyBytes::new(py, &out))
    }

    /// (tag, start, newest, keys) of each generation, oldest first (for a snapshot).
    fn generations(&self) -> Vec<(u8, f64, f64, i64)> {
        self.generations
            .iter()
            .map(|g| (g.tag, g.start, g.newest, g.keys))
            .collect()
    }

    /// A snapshot's store, checked by the caller (guard/engine/snapshot.py) to add up.
    #[allow(clippy::too_many_arguments)]
    fn load(
        &mut self,
        bits: u32,
        buckets: Vec<Vec<u8>>,
        generations: Vec<(u8, f64, f64, i64)>,
        rotate_at: f64,
        sequence: i64,
        keys: i64,
        evicted: i64,
    ) -> PyResult<()> {
        if buckets.len() != 1usize.checked_shl(bits).unwrap_or(0)
            || buckets.iter().any(|b| b.len() % ENTRY != 0)
        {
            return Err(PyValueError::new_err(
                "dedupe buckets do not match their count",
            ));
        }
        self.bits = bits;
        self.buckets = buckets;
        self.generations = generations
            .into_iter()
            .map(|(tag, start, newest, keys)| Generation {
                tag,
                start,
                newest,
                keys,
            })
            .collect();
        self.detached = if self.generations.is_empty() {
            Some(DETACHED)
        } else {
            None
        };
        (self.rotate_at, self.sequence, self.keys, self.evicted) =
            (rotate_at, sequence, keys, evicted);
        Ok(())
    }
}
