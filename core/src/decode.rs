//! The envelope's fast path: a webhook as nearly all are (ASCII, no escapes, a counted event, every field of
//! its type and length, an RFC 3339 timestamp with its zone) decoded to the very `Event` that
//! guard/contracts/events.py's `decode` returns. Anything else, and anything that would be an error or an
//! ignored event, is left to that decoder (None): it is the reference, and it names what is wrong.

use std::fmt;
use std::marker::PhantomData;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

const MAX_ID_LENGTH: usize = 256;
const MAX_ADDRESS_LENGTH: usize = 320;
const MAX_CLOCK_SKEW_SECONDS: f64 = 300.0; // past it, counted at the record's time: the reference's job
const LATEST_EVENT_TIME: f64 = 253402300799.0;
const EXACT_MICROSECONDS: i64 = 1 << 53; // beyond it, microseconds / 1e6 in floats is not Python's int division
                                         // Deeper JSON is the reference's to judge: msgspec's limit is Python's recursion limit, which depends on the caller
const MAX_DEPTH: usize = 64;

/// A struct read from a JSON object only, as msgspec reads one: serde's derived structs also take an array
/// of their fields in order (`"reply": ["x"]` would read as a reply of id "x"), which msgspec refuses.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Fields(PhantomData))
            .map(Object)
    }
}

/// How deeply arrays and objects nest (strings hold no escapes here, so a quote always ends or starts one).
fn depth(raw: &[u8]) -> usize {
    let (mut deepest, mut level, mut in_string) = (0, 0usize, false);
    for &byte in raw {
        match byte {
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                level += 1;
                deepest = deepest.max(level);
            }
            b']' | b'}' if !in_string => level = level.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow, default)]
    id: Option<&'a str>,
    #[serde(borrow, default)]
    classification: Option<&'a str>,
    #[serde(borrow, default, rename = "campaignId")]
    campaign_id: Option<&'a str>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(borrow, default, rename = "campaignId")]
    campaign_id: Option<&'a str>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<&'a str>,
    #[serde(borrow, default, rename = "workspaceId")]
    workspace_id: Option<&'a str>,
    #[serde(borrow, default)]
    recipient: Option<&'a str>,
    #[serde(borrow, default, rename = "recipientDomain")]
    recipient_domain: Option<&'a str>,
    #[serde(borrow, default, rename = "bounceType")]
    bounce_type: Option<&'a str>,
    #[serde(borrow, default, rename = "bounceReason")]
    bounce_reason: Option<&'a str>,
    #[serde(default, rename = "sequenceStep")]
    sequence_step: Option<i64>,
    #[serde(borrow, default, rename = "senderAccountId")]
    sender_account_id: Option<&'a str>,
    #[serde(borrow, default)]
    from: Option<&'a str>,
    #[serde(borrow, default)]
    reply: Option<Object<Reply<'a>>>,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: &'a str,
    #[serde(borrow)]
    data: Object<Data<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a str>,
}

/// The domain of a sending address, bare or named ("Ann <a@acme.com>"), in lower case, as the reference has it.
fn sender_domain(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim_end_matches(['>', ' ']).to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146097 + day_of_era - 719468
}

fn digits(text: &[u8]) -> Option<i64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        text.iter()
            .fold(0, |value, digit| value * 10 + i64::from(digit - b'0')),
    )
}

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|±HH:MM)`; None for any other form,
/// which the reference decoder judges.
fn rfc3339_micros(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > month_days[(month - 1) as usize] {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if rest.first() == Some(&b'.') {
        let count = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 || count > 6 {
            return None;
        }
        micros = digits(&rest[1..1 + count])? * 10_i64.pow((6 - count) as u32);
        rest = &rest[1 + count..];
    }
    let offset = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (hours, minutes) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + micros)
}

fn within(text: Option<&str>, limit: usize) -> bool {
    text.is_none_or(|text| text.len() <= limit) // ASCII: bytes are characters
}

/// events.py's `_ENHANCED_STATUS`: `[245].d{1,3}.d{1,3}` not inside a longer dotted number.
fn enhanced_status(reason: &str) -> Option<&str> {
    let b = reason.as_bytes();
    let dotted = |c: u8| c.is_ascii_digit() || c == b'.';
    for start in 0..b.len() {
        if !matches!(b[start], b'2' | b'4' | b'5') || (start > 0 && dotted(b[start - 1])) {
            continue;
        }
        if b.get(start + 1) != Some(&b'.') {
            continue;
        }
        // greedy as the regex: the longest digit runs that still let the rest match, then the lookahead
        let first_run = b[start + 2..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        for first in (1..=first_run.min(3)).rev() {
            let dot = start + 2 + first;
            if b.get(dot) != Some(&b'.') {
                continue;
            }
            let second_run = b[dot + 1..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            for second in (1..=second_run.min(3)).rev() {
                let end = dot + 1 + second;
                if b.get(end).is_none_or(|&c| !dotted(c)) {
                    return Some(&reason[start..end]);
                }
            }
        }
    }
    None
}

fn workspace_id_ok(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.:-".contains(&c))
}

fn truthy(text: Option<&str>) -> Option<&str> {
    text.filter(|text| !text.is_empty())
}

/// Builds events.py's `Event` for the envelopes it takes.
#[pyclass(module = "guard_core", frozen)]
pub struct FastDecoder {
    event_type: Py<PyAny>,
    signals: Py<PyDict>,     // event name -> Signal: events.py's SIGNALS
    unsubscribed: Py<PyAny>, // Signal.UNSUBSCRIBED: a reply classified so (never an event name of its own)
}

#[pymethods]
impl FastDecoder {
    /// `event_type`: events.Event; `signals`: events.SIGNALS; `unsubscribed`: Signal.UNSUBSCRIBED.
    #[new]
    fn new(event_type: Py<PyAny>, signals: Py<PyDict>, unsubscribed: Py<PyAny>) -> Self {
        Self {
            event_type,
            signals,
            unsubscribed,
        }
    }

    /// The Event `decode(value, record_time)` returns, or None: the reference decoder then decides.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        value: &Bound<'py, PyAny>,
        record_time: f64,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Ok(bytes) = value.cast::<PyBytes>() else {
            return Ok(None);
        };
        let raw = bytes.as_bytes();
        if !raw.is_ascii() || raw.contains(&b'\\') || raw.contains(&0x7f) {
            return Ok(None); // escapes and non-ASCII are screened for unsafe characters: the reference's job
        }
        if depth(raw) > MAX_DEPTH {
            return Ok(None);
        }
        let Ok(Object(envelope)) = serde_json::from_slice::<Object<Envelope>>(raw) else {
            return Ok(None);
        };
        if envelope.event == "campaign.started" {
            return Ok(None); // named by its stamp (events.py `_named_start`): one a campaign, the reference's job
        }
        let signals = self.signals.bind(py);
        let Some(mut signal) = signals.get_item(envelope.event)? else {
            return Ok(None);
        };
        let data = &envelope.data.0;
        let reply = data.reply.as_ref().map(|reply| &reply.0);
        let ids_fit = [
            data.campaign_id,
            data.message_id,
            data.workspace_id,
            data.sender_account_id,
        ]
        .into_iter()
        .chain(reply.map_or([None, None], |r| [r.id, r.campaign_id]))
        .all(|id| within(id, MAX_ID_LENGTH));
        if !ids_fit
            || !within(data.recipient, MAX_ADDRESS_LENGTH)
            || !within(data.recipient_domain, MAX_ADDRESS_LENGTH)
            || !within(data.from, MAX_ADDRESS_LENGTH)
        {
            return Ok(None);
        }
        let time = match envelope.timestamp {
            None => record_time,
            Some(stamp) => match rfc3339_micros(stamp) {
                Some(micros) if micros.abs() < EXACT_MICROSECONDS => micros as f64 / 1e6,
                _ => return Ok(None),
            },
        };
        if !(0.0..=LATEST_EVENT_TIME).contains(&time)
            || (envelope.timestamp.is_some() && time > record_time + MAX_CLOCK_SKEW_SECONDS)
        {
            return Ok(None);
        }
        let mut message_id = data.message_id;
        if envelope.event == "reply.received" {
            let Some(reply) = reply else {
                return Ok(None);
            };
            message_id = truthy(reply.id).or(message_id);
            if reply.classification == Some("unsubscribe") {
                signal = self.unsubscribed.bind(py).clone();
            }
        }
        let Some(campaign_id) =
            truthy(data.campaign_id).or_else(|| truthy(reply.and_then(|r| r.campaign_id)))
        else {
            return Ok(None);
        };
        if data.workspace_id.is_some_and(|id| !workspace_id_ok(id)) {
            return Ok(None);
        }
        let bounced = envelope.event == "message.bounced";
        if bounced
            && data
                .bounce_type
                .is_some_and(|kind| kind != "hard" && kind != "soft")
        {
            return Ok(None);
        }
        let domain = match (truthy(data.recipient_domain), truthy(data.recipient)) {
            (Some(domain), _) => Some(domain.to_ascii_lowercase()),
            (None, Some(recipient)) => recipient
                .rsplit_once('@')
                .map(|(_, domain)| domain.to_ascii_lowercase()),
            _ => None,
        };
        let (bounce_type, status) = if bounced {
            (
                data.bounce_type,
                truthy(data.bounce_reason).and_then(enhanced_status),
            )
        } else {
            (None, None)
        };
        let event = self.event_type.bind(py).call1((
            signal,
            campaign_id,
            time,
            message_id,
            domain,
            bounce_type,
            status,
            data.sequence_step,
            data.sender_account_id,
            data.workspace_id,
            data.from.and_then(sender_domain),
        ))?;
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::{enhanced_status, rfc3339_micros};

    #[test]
    fn reads_rfc3339() {
        assert_eq!(rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_micros("2024-05-01T12:00:00.5+02:00"),
            Some((1_714_564_800 - 7200) * 1_000_000 + 500_000)
        );
        assert_eq!(rfc3339_micros("2024-02-30T00:00:00Z"), None);
        assert_eq!(rfc3339_micros("2026-01-01T10:00:00"), None);
    }

    #[test]
    fn finds_the_status_as_the_regex_does() {
        assert_eq!(
            enhanced_status("[40.4.1.10] said: 550 5.1.1 no such user"),
            Some("5.1.1")
        );
        assert_eq!(enhanced_status("4.2.2 full"), Some("4.2.2"));
        assert_eq!(enhanced_status("5.1.1234"), None);
        assert_eq!(enhanced_status("x5.1.10"), Some("5.1.10"));
    }
}
