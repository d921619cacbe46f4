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
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
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
        if 16 + header_len > file_len {
            return Err(corrupt("header runs past the end of the file"));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|e| corrupt(&format!("bad header: {e}")))?;
        let index_len = 8 * (header.samples as u64 + 1);
        let data_start = 16 + header_len + index_len;
        if data_start > file_len {
            return Err(corrupt("offset index runs past the end of the file"));
        }
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
        if offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().copied().unwrap_or(0) + data_start != file_len
        {
            return Err(corrupt("offset index does not match the file size"));
        }
        Ok(ShardReader {
            path: p,
            file,
            schema: header.fields,
            offsets,
            data_start,
        })
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
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
        let mut frame = vec![0u8; (end - start) as usize];
        self.file.read_exact(&mut frame).map_err(io)?;
        let total: usize = self.schema.iter().map(Field::byte_len).sum();
        let raw = zstd::bulk::decompress(&frame, total).map_err(|e| ShardError::Corrupt {
            path: self.path.clone(),
            why: format!("sample {index}: {e}"),
        })?;
        if raw.len() != total {
            return Err(ShardError::Corrupt {
                path: self.path.clone(),
                why: format!("sample {index}: {} bytes, schema says {total}", raw.len()),
            });
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

#[cfg(test)]
mod tests {
    use super::*;

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
