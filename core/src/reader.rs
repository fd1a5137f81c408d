//! Reading a snapshot's series as msgspec reads them into snapshot.py's mirrors: msgpack, taken by the type each
//! mirror's field declares (an int where a float is declared, extra trailing fields of a struct skipped), so a
//! restore builds the core's series from the bytes without the mirror objects between. Every malformed input is
//! a ValueError (snapshot.py calls it corrupt), never a panic.

use pyo3::prelude::*;
use rmp::Marker;

use crate::snapshot::corrupt;

pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

fn expected(what: &str, marker: Marker) -> PyErr {
    corrupt(format!("expected {what}, got msgpack {marker:?}"))
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.data.is_empty()
    }

    fn take(&mut self, len: usize) -> PyResult<&'a [u8]> {
        if self.data.len() < len {
            return Err(corrupt("a series cut short"));
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }

    fn be<const N: usize>(&mut self) -> PyResult<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("N bytes taken"))
    }

    fn marker(&mut self) -> PyResult<Marker> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }

    /// True, and the nil taken, if a nil is next.
    pub(crate) fn nil(&mut self) -> bool {
        let is_nil = self.data.first() == Some(&Marker::Null.to_u8());
        if is_nil {
            self.data = &self.data[1..];
        }
        is_nil
    }

    fn array_of(&mut self, marker: Marker) -> PyResult<Option<usize>> {
        Ok(Some(match marker {
            Marker::FixArray(len) => len.into(),
            Marker::Array16 => u16::from_be_bytes(self.be()?).into(),
            Marker::Array32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        }))
    }

    pub(crate) fn array(&mut self) -> PyResult<usize> {
        let marker = self.marker()?;
        self.array_of(marker)?
            .ok_or_else(|| expected("an array", marker))
    }

    fn int_of(&mut self, marker: Marker) -> PyResult<Option<i64>> {
        Ok(Some(match marker {
            Marker::FixPos(value) => value.into(),
            Marker::FixNeg(value) => value.into(),
            Marker::U8 => u8::from_be_bytes(self.be()?).into(),
            Marker::U16 => u16::from_be_bytes(self.be()?).into(),
            Marker::U32 => u32::from_be_bytes(self.be()?).into(),
            Marker::U64 => i64::try_from(u64::from_be_bytes(self.be()?))
                .map_err(|_| corrupt("a number past i64"))?,
            Marker::I8 => i8::from_be_bytes(self.be()?).into(),
            Marker::I16 => i16::from_be_bytes(self.be()?).into(),
            Marker::I32 => i32::from_be_bytes(self.be()?).into(),
            Marker::I64 => i64::from_be_bytes(self.be()?),
            _ => return Ok(None),
        }))
    }

    pub(crate) fn int(&mut self) -> PyResult<i64> {
        let marker = self.marker()?;
        self.int_of(marker)?
            .ok_or_else(|| expected("an int", marker))
    }

    /// A float, or an int taken as one (as msgspec takes it for a float field).
    pub(crate) fn float(&mut self) -> PyResult<f64> {
        let marker = self.marker()?;
        match marker {
            Marker::F64 => Ok(f64::from_be_bytes(self.be()?)),
            Marker::F32 => Ok(f32::from_be_bytes(self.be()?).into()),
            // an unsigned past i64 is still a number msgspec takes for a float
            Marker::U64 => Ok(u64::from_be_bytes(self.be()?) as f64),
            _ => self
                .int_of(marker)?
                .map(|value| value as f64)
                .ok_or_else(|| expected("a float", marker)),
        }
    }

    pub(crate) fn optional_float(&mut self) -> PyResult<Option<f64>> {
        if self.nil() {
            return Ok(None);
        }
        self.float().map(Some)
    }

    pub(crate) fn boolean(&mut self) -> PyResult<bool> {
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            other => Err(expected("a bool", other)),
        }
    }

    fn bin_len(&mut self, marker: Marker) -> PyResult<Option<usize>> {
        Ok(Some(match marker {
            Marker::Bin8 => u8::from_be_bytes(self.be()?).into(),
            Marker::Bin16 => u16::from_be_bytes(self.be()?).into(),
            Marker::Bin32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        }))
    }

    fn map_of(&mut self, marker: Marker) -> PyResult<Option<usize>> {
        Ok(Some(match marker {
            Marker::FixMap(len) => len.into(),
            Marker::Map16 => u16::from_be_bytes(self.be()?).into(),
            Marker::Map32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        }))
    }

    pub(crate) fn bin(&mut self) -> PyResult<&'a [u8]> {
        let marker = self.marker()?;
        let len = self
            .bin_len(marker)?
            .ok_or_else(|| expected("bytes", marker))?;
        self.take(len)
    }

    /// An array field: its little-endian bytes as numbers (as `array.frombytes` reads them).
    pub(crate) fn numbers<const N: usize, T>(
        &mut self,
        from_le: fn([u8; N]) -> T,
    ) -> PyResult<Vec<T>> {
        let bytes = self.bin()?;
        if bytes.len() % N != 0 {
            return Err(corrupt("bytes length not a multiple of item size"));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|chunk| from_le(chunk.try_into().expect("chunks of N")))
            .collect())
    }

    fn str_len(&mut self, marker: Marker) -> PyResult<Option<usize>> {
        Ok(Some(match marker {
            Marker::FixStr(len) => len.into(),
            Marker::Str8 => u8::from_be_bytes(self.be()?).into(),
            Marker::Str16 => u16::from_be_bytes(self.be()?).into(),
            Marker::Str32 => u32::from_be_bytes(self.be()?) as usize,
            _ => return Ok(None),
        }))
    }

    pub(crate) fn text(&mut self) -> PyResult<&'a str> {
        let marker = self.marker()?;
        let len = self
            .str_len(marker)?
            .ok_or_else(|| expected("a string", marker))?;
        std::str::from_utf8(self.take(len)?).map_err(|_| corrupt("a string that is not UTF-8"))
    }

    /// An optional list of samples: nil, or an array of what `sample` reads for each.
    pub(crate) fn samples<T>(
        &mut self,
        mut sample: impl FnMut(&mut Self) -> PyResult<T>,
    ) -> PyResult<crate::Samples<T>> {
        if self.nil() {
            return Ok(None);
        }
        let len = self.array()?;
        let mut samples = Vec::with_capacity(len.min(crate::SAMPLE_IDS + 1));
        for _ in 0..len {
            samples.push(sample(self)?);
        }
        Ok(Some(Box::new(samples)))
    }

    /// A pair of a sample: an array of exactly two.
    pub(crate) fn pair<A, B>(
        &mut self,
        first: impl FnOnce(&mut Self) -> PyResult<A>,
        second: impl FnOnce(&mut Self) -> PyResult<B>,
    ) -> PyResult<(A, B)> {
        let len = self.array()?;
        if len != 2 {
            return Err(corrupt(format!("a sample of {len} items, not 2")));
        }
        Ok((first(self)?, second(self)?))
    }

    /// `count` values of any kind, skipped (a struct's fields past those this core knows, as msgspec skips them):
    /// without recursion, so values nested however deep cannot exhaust the stack.
    pub(crate) fn skip(&mut self, count: usize) -> PyResult<()> {
        let mut left = count as u64; // values still to skip: an array's items and a map's keys and values add to it
        while left > 0 {
            left -= 1;
            let marker = self.marker()?;
            if let Some(items) = self.array_of(marker)? {
                left = left.saturating_add(items as u64);
                continue;
            }
            if let Some(pairs) = self.map_of(marker)? {
                left = left.saturating_add(2 * pairs as u64);
                continue;
            }
            if let Some(len) = self.str_len(marker)? {
                self.take(len)?;
                continue;
            }
            if let Some(len) = self.bin_len(marker)? {
                self.take(len)?;
                continue;
            }
            let len: usize = match marker {
                Marker::FixPos(_)
                | Marker::FixNeg(_)
                | Marker::Null
                | Marker::True
                | Marker::False => 0,
                Marker::U8 | Marker::I8 => 1,
                Marker::U16 | Marker::I16 => 2,
                Marker::U32 | Marker::I32 | Marker::F32 => 4,
                Marker::U64 | Marker::I64 | Marker::F64 => 8,
                Marker::FixExt1 => 2,
                Marker::FixExt2 => 3,
                Marker::FixExt4 => 5,
                Marker::FixExt8 => 9,
                Marker::FixExt16 => 17,
                Marker::Ext8 => 1 + usize::from(u8::from_be_bytes(self.be()?)),
                Marker::Ext16 => 1 + usize::from(u16::from_be_bytes(self.be()?)),
                Marker::Ext32 => 1 + u32::from_be_bytes(self.be()?) as usize,
                _ => return Err(expected("a value", marker)),
            };
            self.take(len)?;
        }
        Ok(())
    }
}
