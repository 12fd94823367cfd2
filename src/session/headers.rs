//! A session's identity headers, built once at login and sent with every
//! request as slices of one buffer.

/// Identity headers, built once per session rather than per request. The
/// values sit in one buffer: a session holds one allocation for all of
/// them, and a request takes slices of it (a reference count each, no
/// copy). The names are the preset's static list.
#[derive(Debug, Clone, Default)]
pub struct HeaderSet {
    values: bytes::Bytes,
    names: &'static [&'static str],
    /// Where each value ends in `values` (it starts where the last ended).
    ends: [u16; HeaderSet::MAX],
    /// Values that are not valid header values (bit per header): left out.
    invalid: u8,
}

impl HeaderSet {
    /// The most headers a set holds (a preset has at most seven).
    pub const MAX: usize = 7;

    /// `values[i]` is the value of `names[i]`.
    pub fn new(names: &'static [&'static str], values: Vec<String>) -> HeaderSet {
        let names = &names[..names.len().min(values.len()).min(Self::MAX)];
        let mut buf = Vec::with_capacity(values.iter().map(String::len).sum());
        let mut ends = [0; Self::MAX];
        let mut invalid = 0;
        for (i, v) in values.iter().take(names.len()).enumerate() {
            // Beyond 64 KiB in all (values are at most 8 KiB each) or not
            // a header value: left out.
            if http::HeaderValue::from_str(v).is_err() || buf.len() + v.len() > u16::MAX as usize {
                invalid |= 1 << i;
            } else {
                buf.extend_from_slice(v.as_bytes());
            }
            ends[i] = buf.len() as u16;
        }
        HeaderSet {
            values: buf.into(),
            names,
            ends,
            invalid,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len() - self.invalid.count_ones() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The headers, ready to send.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, http::HeaderValue)> + '_ {
        let ends = &self.ends[..self.names.len()];
        let starts = std::iter::once(0).chain(ends.iter().copied());
        self.names
            .iter()
            .zip(starts.zip(ends.iter().copied()))
            .enumerate()
            .filter(|(i, _)| self.invalid & (1 << i) == 0)
            .filter_map(|(_, (name, (start, end)))| {
                let v = self.values.slice(start as usize..end as usize);
                http::HeaderValue::from_maybe_shared(v).ok().map(|v| (*name, v))
            })
    }
}
