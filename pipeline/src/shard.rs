//! Shard container format v1: a few hundred to a few thousand samples of named, typed,
//! fixed-shape tensors; every sample an independent zstd frame so any sample can be read
//! without decompressing the others. SHARDS.md documents the bytes; keep the two in step.

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Eight bytes that open every shard.
pub const MAGIC: &[u8; 8] = b"LM4VSHRD";
/// Bumped only when the byte layout changes (readers refuse versions they do not know).
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{path}: not an lm4ve shard (bad magic); the file is corrupt or not a shard")]
    BadMagic { path: String },
    #[error("{path}: shard format version {found} is newer than this lm4ve understands ({FORMAT_VERSION}); upgrade lm4ve")]
    Version { path: String, found: u32 },
    #[error("{path}: corrupt shard: {why}; run `lm4ve cache verify` and re-run the stage")]
    Corrupt { path: String, why: String },
    #[error("sample {index} out of range: the shard has {len} samples")]
    OutOfRange { index: usize, len: usize },
    #[error("field `{field}`: expected {expected} bytes ({shape:?} of {dtype}), got {got}")]
    FieldSize {
        field: String,
        dtype: Dtype,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
    #[error("sample has {got} fields, schema has {expected}")]
    FieldCount { expected: usize, got: usize },
    #[error("{0}; run the stage again (`lm4ve pipeline run`) to rebuild it")]
    Damaged(#[from] crate::verified::ObjectError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Element types a field may hold, spelled as numpy spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    Uint8,
    Int32,
    Int64,
    Float16,
    Float32,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::Uint8 => 1,
            Dtype::Float16 => 2,
            Dtype::Int32 | Dtype::Float32 => 4,
            Dtype::Int64 => 8,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Dtype::Uint8 => "uint8",
            Dtype::Int32 => "int32",
            Dtype::Int64 => "int64",
            Dtype::Float16 => "float16",
            Dtype::Float32 => "float32",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl Field {
    pub fn new(name: &str, dtype: Dtype, shape: &[usize]) -> Self {
        Field {
            name: name.to_string(),
            dtype,
            shape: shape.to_vec(),
        }
    }
    pub fn byte_len(&self) -> usize {
        self.checked_byte_len().unwrap_or(usize::MAX)
    }
    /// `prod(shape) × itemsize`, `None` when it overflows (a shape from a damaged header).
    pub fn checked_byte_len(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |a, &d| a.checked_mul(d))
    }
}

/// Largest decompressed sample a reader accepts (an SSv2 sample is ~2.4 MB; this bounds
/// what a damaged or hostile header can make a reader allocate).
pub const MAX_SAMPLE_BYTES: usize = 1 << 30;
/// Most fields a sample may have.
const MAX_FIELDS: usize = 1024;

/// A schema's sizes are computable and bounded: every field's `prod(shape) × itemsize`
/// and their sum fit in [`MAX_SAMPLE_BYTES`]; names are unique and non-empty.
/// The largest sample a stage may plan (its params are checked against it when the config
/// loads): samples are built in memory, one per worker thread, and a training batch holds
/// many. Readers accept up to `MAX_SAMPLE_BYTES`.
pub const MAX_STAGE_SAMPLE_BYTES: usize = 64 << 20;

pub fn check_schema(schema: &Schema) -> Result<usize, String> {
    if schema.len() > MAX_FIELDS {
        return Err(format!("{} fields (at most {MAX_FIELDS})", schema.len()));
    }
    let mut total = 0usize;
    let mut names = std::collections::BTreeSet::new();
    for f in schema {
        if f.name.is_empty() || !names.insert(f.name.as_str()) {
            return Err("a field name is empty or repeated".into());
        }
        total = f
            .checked_byte_len()
            .and_then(|n| total.checked_add(n))
            .filter(|t| *t <= MAX_SAMPLE_BYTES)
            .ok_or_else(|| {
                format!("a sample would be over {MAX_SAMPLE_BYTES} bytes (field shapes too large)")
            })?;
    }
    Ok(total)
}

/// The fields of every sample, in storage order.
pub type Schema = Vec<Field>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    fields: Schema,
    samples: usize,
}

/// Packs one sample's fields (raw little-endian bytes, schema order) into a zstd frame.
/// Separate from the writer so callers can compress samples in parallel.
pub fn encode_sample(schema: &Schema, fields: &[&[u8]], level: i32) -> Result<Vec<u8>, ShardError> {
    if fields.len() != schema.len() {
        return Err(ShardError::FieldCount {
            expected: schema.len(),
            got: fields.len(),
        });
    }
    let mut raw = Vec::with_capacity(schema.iter().map(Field::byte_len).sum());
    for (field, bytes) in schema.iter().zip(fields) {
        if bytes.len() != field.byte_len() {
            return Err(ShardError::FieldSize {
                field: field.name.clone(),
                dtype: field.dtype,
                shape: field.shape.clone(),
                expected: field.byte_len(),
                got: bytes.len(),
            });
        }
        raw.extend_from_slice(bytes);
    }
    zstd::bulk::compress(&raw, level).map_err(|source| ShardError::Io {
        path: "<zstd>".into(),
        source,
    })
}

/// Collects encoded samples and lays out the shard bytes.
pub struct ShardWriter {
    schema: Schema,
    frames: Vec<Vec<u8>>,
}

impl ShardWriter {
    pub fn new(schema: Schema) -> Self {
        ShardWriter {
            schema,
            frames: Vec::new(),
        }
    }
    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    /// Appends a frame made by [`encode_sample`] with this writer's schema.
    pub fn push_encoded(&mut self, frame: Vec<u8>) {
        self.frames.push(frame);
    }
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    /// The whole shard as bytes (shards are small enough to assemble in memory).
    pub fn finish(self) -> Vec<u8> {
        let header = Header {
            format: "lm4ve-shard".into(),
            fields: self.schema,
            samples: self.frames.len(),
        };
        // serde_json of a struct is deterministic: field order is declaration order.
        let header = serde_json::to_vec(&header).unwrap_or_default();
        let data_len: usize = self.frames.iter().map(Vec::len).sum();
        let mut out =
            Vec::with_capacity(16 + header.len() + 8 * (self.frames.len() + 1) + data_len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        let mut offset = 0u64;
        out.extend_from_slice(&offset.to_le_bytes());
        for frame in &self.frames {
            offset += frame.len() as u64;
            out.extend_from_slice(&offset.to_le_bytes());
        }
        for frame in &self.frames {
            out.extend_from_slice(frame);
        }
        out
    }
}

/// One decoded sample: the fields' raw bytes in schema order.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub fields: Vec<Vec<u8>>,
}

impl Sample {
    /// The field's bytes viewed as little-endian f32 values.
    pub fn f32s(&self, i: usize) -> Vec<f32> {
        self.fields[i]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    pub fn i64s(&self, i: usize) -> Vec<i64> {
        self.fields[i]
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                i64::from_le_bytes(b)
            })
            .collect()
    }
}

/// Random access to the samples of one shard file.
pub struct ShardReader {
    path: String,
    file: std::fs::File,
    schema: Schema,
    offsets: Vec<u64>,
    data_start: u64,
    /// Decompressed bytes of one sample (checked against the schema at open).
    sample_bytes: usize,
}

impl ShardReader {
    pub fn open(path: &Path) -> Result<Self, ShardError> {
        let p = path.display().to_string();
        let io = |source| ShardError::Io {
            path: p.clone(),
            source,
        };
        let corrupt = |why: &str| ShardError::Corrupt {
            path: p.clone(),
            why: why.to_string(),
        };
        // A shard of the cache is used only if its bytes hash to its name.
        crate::verified::check_object_path(path)?;
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut fixed = [0u8; 16];
        file.read_exact(&mut fixed)
            .map_err(|_| corrupt("shorter than the 16-byte preamble"))?;
        if &fixed[0..8] != MAGIC {
            return Err(ShardError::BadMagic { path: p });
        }
        let version = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        if version != FORMAT_VERSION {
            return Err(ShardError::Version {
                path: p,
                found: version,
            });
        }
        let header_len = u32::from_le_bytes([fixed[12], fixed[13], fixed[14], fixed[15]]) as u64;
        // Every size below comes from the file: checked arithmetic, and nothing is allocated
        // before it is known to fit in the file.
        let after_header = 16u64
            .checked_add(header_len)
            .filter(|n| *n <= file_len)
            .ok_or_else(|| corrupt("header runs past the end of the file"))?;
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|e| corrupt(&format!("bad header: {e}")))?;
        if header.format != "lm4ve-shard" {
            return Err(corrupt("header format is not lm4ve-shard"));
        }
        let sample_bytes = check_schema(&header.fields).map_err(|e| corrupt(&e))?;
        let index_len = (header.samples as u64)
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .filter(|n| {
                after_header
                    .checked_add(*n)
                    .is_some_and(|end| end <= file_len)
            })
            .ok_or_else(|| corrupt("offset index runs past the end of the file"))?;
        let data_start = after_header + index_len;
        let mut index = vec![0u8; index_len as usize];
        file.read_exact(&mut index).map_err(io)?;
        let offsets: Vec<u64> = index
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_le_bytes(b)
            })
            .collect();
        let data_len = file_len - data_start;
        if offsets.first() != Some(&0)
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last() != Some(&data_len)
        {
            return Err(corrupt("offset index does not match the file size"));
        }
        Ok(ShardReader {
            path: p,
            file,
            schema: header.fields,
            offsets,
            data_start,
            sample_bytes,
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads and decompresses sample `index` only.
    pub fn read(&mut self, index: usize) -> Result<Sample, ShardError> {
        if index >= self.len() {
            return Err(ShardError::OutOfRange {
                index,
                len: self.len(),
            });
        }
        let (start, end) = (self.offsets[index], self.offsets[index + 1]);
        let path = self.path.clone();
        let io = |source| ShardError::Io {
            path: path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.data_start + start))
            .map_err(io)?;
        // Offsets are checked at open: ascending and ending at the file's end.
        let mut frame = vec![0u8; end.saturating_sub(start) as usize];
        self.file.read_exact(&mut frame).map_err(io)?;
        let total = self.sample_bytes;
        let corrupt = |why: String| ShardError::Corrupt {
            path: self.path.clone(),
            why: format!("sample {index}: {why}"),
        };
        // The frame header says how much it decompresses to; refuse a frame that claims
        // more than the schema before allocating anything for it.
        match zstd::zstd_safe::get_frame_content_size(&frame) {
            Ok(Some(n)) if n == total as u64 => {}
            Ok(Some(n)) => return Err(corrupt(format!("{n} bytes, schema says {total}"))),
            // Unknown size: decompression below is still capped at `total`.
            Ok(None) => {}
            Err(_) => return Err(corrupt("not a zstd frame".into())),
        }
        let raw = zstd::bulk::decompress(&frame, total).map_err(|e| corrupt(e.to_string()))?;
        if raw.len() != total {
            return Err(corrupt(format!("{} bytes, schema says {total}", raw.len())));
        }
        let mut fields = Vec::with_capacity(self.schema.len());
        let mut at = 0;
        for f in &self.schema {
            fields.push(raw[at..at + f.byte_len()].to_vec());
            at += f.byte_len();
        }
        Ok(Sample { fields })
    }
}

/// Checks a shard file against what a manifest or unit record says of it: a well-formed
/// header and offset index, `samples` samples and, when given, exactly `schema`. Used on
/// pulled shards and by `cache verify`, so a shard whose bytes match their hash but whose
/// header lies is refused before a reader trusts it.
pub fn check_shard(path: &Path, samples: u64, schema: Option<&Schema>) -> Result<(), ShardError> {
    let r = ShardReader::open(path)?;
    let corrupt = |why: String| ShardError::Corrupt {
        path: path.display().to_string(),
        why,
    };
    if r.len() as u64 != samples {
        return Err(corrupt(format!(
            "{} samples, its record says {samples}",
            r.len()
        )));
    }
    if let Some(s) = schema {
        if r.schema() != s {
            return Err(corrupt("its fields are not the manifest's schema".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard whose header claims `samples` samples and whose offset index is empty: the
    /// 123-byte file of issue 16 (`8*(samples+1)` wrapped to 0 in release builds).
    fn lying_header(samples: u64) -> Vec<u8> {
        let header = format!(
            r#"{{"format":"lm4ve-shard","fields":[{{"name":"x","dtype":"uint8","shape":[4]}}],"samples":{samples}}}"#
        );
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out
    }

    #[test]
    fn a_header_with_u64_max_samples_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        for n in [u64::MAX, u64::MAX / 8, 1 << 40] {
            let p = dir.path().join(format!("s{n}"));
            std::fs::write(&p, lying_header(n)).unwrap();
            assert!(
                matches!(ShardReader::open(&p), Err(ShardError::Corrupt { .. })),
                "{n}"
            );
        }
    }

    #[test]
    fn huge_shapes_are_refused_at_open() {
        let header = r#"{"format":"lm4ve-shard","fields":[{"name":"x","dtype":"float32","shape":[4294967296,4294967296]}],"samples":0}"#;
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&(header.len() as u32).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, b).unwrap();
        assert!(ShardReader::open(&p).is_err());
    }

    #[test]
    fn round_trip_random_access() {
        let schema = vec![
            Field::new("x", Dtype::Float32, &[2, 3]),
            Field::new("label", Dtype::Int64, &[]),
        ];
        let mut w = ShardWriter::new(schema.clone());
        for i in 0..10i64 {
            let x: Vec<u8> = (0..6)
                .flat_map(|j| ((i * 10 + j) as f32).to_le_bytes())
                .collect();
            let l = i.to_le_bytes();
            w.push_encoded(encode_sample(&schema, &[&x, &l], 3).unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, w.finish()).unwrap();
        let mut r = ShardReader::open(&p).unwrap();
        assert_eq!(r.len(), 10);
        let s = r.read(7).unwrap();
        assert_eq!(s.f32s(0), vec![70., 71., 72., 73., 74., 75.]);
        assert_eq!(s.i64s(1), vec![7]);
        assert!(matches!(r.read(10), Err(ShardError::OutOfRange { .. })));
    }

    #[test]
    fn wrong_field_size_is_an_error() {
        let schema = vec![Field::new("x", Dtype::Float32, &[2])];
        assert!(encode_sample(&schema, &[&[0u8; 4]], 3).is_err());
    }

    #[test]
    fn truncated_shard_is_an_error_not_a_panic() {
        let schema = vec![Field::new("x", Dtype::Uint8, &[4])];
        let mut w = ShardWriter::new(schema.clone());
        w.push_encoded(encode_sample(&schema, &[&[1, 2, 3, 4]], 3).unwrap());
        let bytes = w.finish();
        let dir = tempfile::tempdir().unwrap();
        for cut in [0, 5, 16, bytes.len() - 1] {
            let p = dir.path().join(format!("s{cut}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(ShardReader::open(&p).is_err(), "cut at {cut}");
        }
    }
}
