//! Argoverse 1.1 forecasting scenario CSVs (`TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME`)
//! → tracks on a common step grid.
//!
//! Why hand-rolled: the files are plain (no quoting, six columns) and reading them is half of
//! the stage's per-scenario cost, so a `split(',')` parser that borrows from the file buffer
//! beats a general CSV reader. Every problem with the file is a [`CsvError`] naming the line:
//! the stage turns it into a reject, never a panic.
//!
//! The step grid is the AGENT's timestamps in ascending order (Argoverse writes the same
//! timestamp for every actor of one frame, so other tracks map onto it by exact value; a row of
//! another track whose timestamp is not one of the AGENT's is ignored). Only the first
//! `total_steps` grid steps are kept.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Column names of the format, in the order Argoverse writes them (any order is accepted).
pub const COLUMNS: [&str; 6] = [
    "TIMESTAMP",
    "TRACK_ID",
    "OBJECT_TYPE",
    "X",
    "Y",
    "CITY_NAME",
];

/// One actor: its id, type and position at each grid step (`None` = not observed).
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: String,
    /// `AGENT`, `AV` or `OTHERS` in Argoverse (kept as written).
    pub object_type: String,
    pub points: Vec<Option<[f64; 2]>>,
}

/// A parsed scenario: `tracks[agent]` is the AGENT, which is observed at every grid step.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub city: String,
    /// The grid: the AGENT's first `total_steps` timestamps, ascending.
    pub timestamps: Vec<f64>,
    pub agent: usize,
    /// In order of first appearance in the file.
    pub tracks: Vec<Track>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsvError {
    #[error("not UTF-8 text")]
    NotText,
    #[error("empty file: no header line")]
    Empty,
    #[error(
        "line 1: header lacks column `{0}` (expected TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME)"
    )]
    MissingColumn(&'static str),
    #[error("line {line}: malformed row: {why}")]
    Malformed { line: usize, why: String },
    #[error("line {line}: {column} = `{value}` is not a finite number")]
    NonFinite {
        line: usize,
        column: &'static str,
        value: String,
    },
    #[error("line {line}: CITY_NAME `{found}` differs from `{first}` (one city per scenario)")]
    MixedCity {
        line: usize,
        first: String,
        found: String,
    },
    #[error("line {line}: track {track} changes OBJECT_TYPE from {first} to {found}")]
    TypeChange {
        line: usize,
        track: String,
        first: String,
        found: String,
    },
    #[error("missing AGENT: no track has OBJECT_TYPE = AGENT")]
    NoAgent,
    #[error("{0} tracks have OBJECT_TYPE = AGENT; a scenario has exactly one")]
    ManyAgents(usize),
    #[error("duplicate timestamp {timestamp} for track {track} (lines {first} and {line})")]
    DuplicateTimestamp {
        track: String,
        timestamp: String,
        first: usize,
        line: usize,
    },
    #[error("fewer than {needed} observed steps: the AGENT has {found}")]
    TooFewObserved { needed: usize, found: usize },
    #[error(
        "needs {needed} steps ({obs} observed + {future} future) for the AGENT, found {found}"
    )]
    TooFewSteps {
        needed: usize,
        obs: usize,
        future: usize,
        found: usize,
    },
}

/// One data row, borrowed from the file text.
struct Row<'a> {
    line: usize,
    ts: f64,
    ts_text: &'a str,
    track: usize,
    xy: [f64; 2],
}

/// Parses one scenario. The AGENT needs at least `obs_steps` rows (else
/// [`CsvError::TooFewObserved`]) and `total_steps` distinct timestamps (else
/// [`CsvError::TooFewSteps`]).
pub fn parse_scenario(
    bytes: &[u8],
    obs_steps: usize,
    total_steps: usize,
) -> Result<Scenario, CsvError> {
    let text = std::str::from_utf8(bytes).map_err(|_| CsvError::NotText)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.lines().enumerate();
    let header = loop {
        match lines.next() {
            Some((_, l)) if l.trim().is_empty() => continue,
            Some((_, l)) => break l,
            None => return Err(CsvError::Empty),
        }
    };
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let mut col = [0usize; 6];
    for (c, want) in col.iter_mut().zip(COLUMNS) {
        *c = names
            .iter()
            .position(|n| *n == want)
            .ok_or(CsvError::MissingColumn(want))?;
    }
    let [c_ts, c_id, c_type, c_x, c_y, c_city] = col;
    let ncols = names.len();

    let mut ids: FastMap<&str, usize> = FastMap::default();
    let mut tracks: Vec<(&str, &str, usize)> = Vec::new(); // (id, type, first line)
    let mut rows: Vec<Row> = Vec::new();
    let mut city: Option<&str> = None;
    let mut fields: Vec<&str> = Vec::with_capacity(ncols);
    // Argoverse writes every row of a frame with the same timestamp text: parse it once.
    let mut last_ts: (&str, f64) = ("", 0.0);
    for (i, line) in lines {
        let line_no = i + 1;
        if line.bytes().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        fields.clear();
        let mut start = 0;
        for_each_comma(line.as_bytes(), |j| {
            fields.push(trim(&line[start..j]));
            start = j + 1;
        });
        fields.push(trim(&line[start..]));
        if fields.len() != ncols {
            return Err(CsvError::Malformed {
                line: line_no,
                why: format!("{} fields, the header has {ncols}", fields.len()),
            });
        }
        let ts_text = fields[c_ts];
        let ts = if ts_text == last_ts.0 && !ts_text.is_empty() {
            last_ts.1
        } else {
            let v = number(ts_text, line_no, "TIMESTAMP")?;
            last_ts = (ts_text, v);
            v
        };
        let xy = [
            number(fields[c_x], line_no, "X")?,
            number(fields[c_y], line_no, "Y")?,
        ];
        let id = fields[c_id];
        let ty = fields[c_type];
        if id.is_empty() || ty.is_empty() {
            return Err(CsvError::Malformed {
                line: line_no,
                why: "empty TRACK_ID or OBJECT_TYPE".into(),
            });
        }
        let c = fields[c_city];
        match city {
            None => city = Some(c),
            Some(first) if first != c => {
                return Err(CsvError::MixedCity {
                    line: line_no,
                    first: first.into(),
                    found: c.into(),
                })
            }
            Some(_) => {}
        }
        let track = match ids.get(id) {
            Some(&t) => {
                if tracks[t].1 != ty {
                    return Err(CsvError::TypeChange {
                        line: line_no,
                        track: id.into(),
                        first: tracks[t].1.into(),
                        found: ty.into(),
                    });
                }
                t
            }
            None => {
                ids.insert(id, tracks.len());
                tracks.push((id, ty, line_no));
                tracks.len() - 1
            }
        };
        rows.push(Row {
            line: line_no,
            ts,
            ts_text,
            track,
            xy,
        });
    }

    let agents: Vec<usize> = (0..tracks.len())
        .filter(|&t| tracks[t].1 == "AGENT")
        .collect();
    let agent = match agents.as_slice() {
        [] => return Err(CsvError::NoAgent),
        [a] => *a,
        many => return Err(CsvError::ManyAgents(many.len())),
    };

    // The grid: the AGENT's timestamps, sorted; a repeated one is an error.
    let mut agent_rows: Vec<&Row> = rows.iter().filter(|r| r.track == agent).collect();
    agent_rows.sort_by(|a, b| a.ts.total_cmp(&b.ts).then(a.line.cmp(&b.line)));
    for w in agent_rows.windows(2) {
        if w[0].ts == w[1].ts {
            return Err(CsvError::DuplicateTimestamp {
                track: tracks[agent].0.into(),
                timestamp: w[1].ts_text.into(),
                first: w[0].line,
                line: w[1].line,
            });
        }
    }
    if agent_rows.len() < obs_steps {
        return Err(CsvError::TooFewObserved {
            needed: obs_steps,
            found: agent_rows.len(),
        });
    }
    if agent_rows.len() < total_steps {
        return Err(CsvError::TooFewSteps {
            needed: total_steps,
            obs: obs_steps,
            future: total_steps - obs_steps,
            found: agent_rows.len(),
        });
    }
    let timestamps: Vec<f64> = agent_rows[..total_steps].iter().map(|r| r.ts).collect();

    let mut points: Vec<Vec<Option<[f64; 2]>>> = vec![vec![None; total_steps]; tracks.len()];
    let mut first_line: Vec<Vec<usize>> = vec![vec![0; total_steps]; tracks.len()];
    // Rows come frame by frame: remember the last timestamp's step.
    let mut last: (f64, Option<usize>) = (f64::NAN, None);
    for r in &rows {
        if r.ts.to_bits() != last.0.to_bits() {
            let step = timestamps.binary_search_by(|t| t.total_cmp(&r.ts)).ok();
            last = (r.ts, step);
        }
        let Some(step) = last.1 else {
            continue; // not a grid timestamp (after the kept steps, or not an AGENT frame)
        };
        let slot = &mut points[r.track][step];
        if slot.is_some() {
            return Err(CsvError::DuplicateTimestamp {
                track: tracks[r.track].0.into(),
                timestamp: r.ts_text.into(),
                first: first_line[r.track][step],
                line: r.line,
            });
        }
        *slot = Some(r.xy);
        first_line[r.track][step] = r.line;
    }
    let tracks = tracks
        .into_iter()
        .zip(points)
        .map(|((id, ty, _), points)| Track {
            id: id.to_string(),
            object_type: ty.to_string(),
            points,
        })
        .collect();
    Ok(Scenario {
        city: city.unwrap_or_default().to_string(),
        timestamps,
        agent,
        tracks,
    })
}

/// Calls `f` with the index of every `,` in `b`, eight bytes at a time (SWAR: the exact
/// zero-byte mask of `word ^ ",,,,,,,,"`), then byte by byte for the tail.
fn for_each_comma(b: &[u8], mut f: impl FnMut(usize)) {
    const COMMAS: u64 = 0x2c2c_2c2c_2c2c_2c2c;
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut chunks = b.chunks_exact(8);
    let mut base = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let x = u64::from_le_bytes(w) ^ COMMAS;
        let mut m = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
        while m != 0 {
            f(base + (m.trailing_zeros() / 8) as usize);
            m &= m - 1;
        }
        base += 8;
    }
    for (j, &c) in chunks.remainder().iter().enumerate() {
        if c == b',' {
            f(base + j);
        }
    }
}

/// `str::trim` with a fast path for the usual case of nothing to trim.
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(b))
            if !a.is_ascii_whitespace()
                && !b.is_ascii_whitespace()
                && a.is_ascii()
                && b.is_ascii() =>
        {
            s
        }
        _ => s.trim(),
    }
}

fn number(text: &str, line: usize, column: &'static str) -> Result<f64, CsvError> {
    if let Some(v) = fast_decimal(text.as_bytes()) {
        return Ok(v);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(CsvError::NonFinite {
            line,
            column,
            value: text.into(),
        }),
        Err(_) => Err(CsvError::Malformed {
            line,
            why: format!("{column} = `{text}` is not a number"),
        }),
    }
}

/// Exact powers of ten representable in an f64.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Plain decimals (`-123.456`, at most 15 digits) as Clinger's fast path: the digits are an
/// exact integer below 2^53 and 10^k is exact, so one IEEE division gives the correctly
/// rounded value — the same f64 as `str::parse`, several times faster. `None` for anything
/// else (exponents, long mantissas, `nan`), which `str::parse` then handles.
pub(super) fn fast_decimal(b: &[u8]) -> Option<f64> {
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let mut m: u64 = 0;
    let mut n = 0usize;
    let mut frac: Option<usize> = None;
    for (i, &c) in digits.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                m = m * 10 + (c - b'0') as u64;
                n += 1;
                if n > 15 {
                    return None;
                }
            }
            b'.' if frac.is_none() => frac = Some(i),
            _ => return None,
        }
    }
    if n == 0 {
        return None;
    }
    let k = frac.map_or(0, |i| digits.len() - i - 1);
    let v = m as f64 / POW10[k];
    Some(if neg { -v } else { v })
}

/// An Fx-style hash, 8 bytes per step: track ids are short keys looked up once per row, and
/// SipHash's DoS resistance buys nothing here while costing a quarter of the parse.
#[derive(Default)]
pub(super) struct FxLike(u64);

/// A hash map keyed with [`FxLike`].
pub(super) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxLike>>;

impl Hasher for FxLike {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        let mut w = [0u8; 8];
        w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.0 = (h.rotate_left(5) ^ u64::from_le_bytes(w) ^ bytes.len() as u64)
            .wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

#[cfg(test)]
mod tests {
    use super::fast_decimal;

    #[test]
    fn swar_comma_scan_finds_every_comma() {
        let mut x: u64 = 12345;
        for len in 0..64 {
            for _ in 0..50 {
                let line: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        [b',', b'a', b'-', 0x2d, 0xac, 0x2c, 0x00, 0xff][(x % 8) as usize]
                    })
                    .collect();
                let mut got = Vec::new();
                super::for_each_comma(&line, |j| got.push(j));
                let want: Vec<usize> = (0..line.len()).filter(|&j| line[j] == b',').collect();
                assert_eq!(got, want, "{line:?}");
            }
        }
    }

    #[test]
    fn fast_decimals_equal_str_parse() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let digits = 1 + (x % 15) as usize;
            let mant = x >> 20;
            let s = format!("{:0w$}", mant % 10u64.pow(digits as u32), w = digits);
            let dot = (x >> 8) as usize % (digits + 1);
            let text = format!(
                "{}{}.{}",
                if x & 1 == 1 { "-" } else { "" },
                &s[..dot],
                &s[dot..]
            );
            let want: f64 = text.parse().unwrap();
            assert_eq!(fast_decimal(text.as_bytes()), Some(want), "{text}");
        }
        for t in [
            "315969629.02821",
            "3770.489136",
            "-0.5",
            "12",
            "7.",
            ".25",
            "+3.5",
        ] {
            assert_eq!(fast_decimal(t.as_bytes()), Some(t.parse().unwrap()), "{t}");
        }
        for t in [
            "",
            "-",
            ".",
            "1e5",
            "nan",
            "1.2.3",
            "1234567890123456",
            "1,5",
            " 1",
        ] {
            assert_eq!(fast_decimal(t.as_bytes()), None, "{t}");
        }
    }
}
