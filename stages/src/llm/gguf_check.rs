//! A bounds check of a GGUF file's header before candle's reader sees it.
//!
//! candle's `gguf_file::Content::read` trusts the file: a string or array length becomes an
//! allocation of that size, `general.alignment = 0` is a division by zero, and a tensor's
//! dimensions become the size of the buffer its data is read into. Each of those aborts the
//! process on a damaged or hostile file (found by `make fuzz`, issue 16). This walks the same
//! structure (GGUF v1–v3: header, metadata, tensor infos) and checks every length against
//! the bytes left in the file, so what candle then allocates is bounded by the file's size.

use std::io::{BufReader, Read};
use std::path::Path;

/// GGUF's metadata value types.
const U8: u32 = 0;
const I8: u32 = 1;
const U16: u32 = 2;
const I16: u32 = 3;
const U32: u32 = 4;
const I32: u32 = 5;
const F32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const U64: u32 = 10;
const I64: u32 = 11;
const F64: u32 = 12;

struct Walker<R> {
    r: R,
    /// Bytes of the file not read yet.
    left: u64,
    /// v1 writes lengths and counts as u32, later versions as u64.
    wide: bool,
}

impl<R: Read> Walker<R> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        if (N as u64) > self.left {
            return Err("the header runs past the end of the file".into());
        }
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| e.to_string())?;
        self.left -= N as u64;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.left {
            return Err("the header runs past the end of the file".into());
        }
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| e.to_string())?;
        if copied != n {
            return Err("the file is shorter than its header says".into());
        }
        self.left -= n;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }

    /// A length or count, which cannot exceed the bytes left (every item takes ≥ 1 byte).
    fn len(&mut self) -> Result<u64, String> {
        let n = if self.wide {
            self.u64()?
        } else {
            u64::from(self.u32()?)
        };
        if n > self.left {
            return Err(format!(
                "a length of {n} with {} bytes left in the file",
                self.left
            ));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.len()?;
        let mut b = vec![0u8; n as usize];
        self.r.read_exact(&mut b).map_err(|e| e.to_string())?;
        self.left -= n;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Skips one value; returns it when it is an integer (for `general.alignment`).
    fn value(&mut self, t: u32, depth: u32) -> Result<Option<u64>, String> {
        Ok(match t {
            U8 | BOOL => Some(u64::from(self.take::<1>()?[0])),
            I8 => Some(self.take::<1>()?[0] as i8 as i64 as u64),
            U16 => Some(u64::from(u16::from_le_bytes(self.take()?))),
            I16 => Some(i16::from_le_bytes(self.take()?) as i64 as u64),
            U32 => Some(u64::from(self.u32()?)),
            I32 => Some(i32::from_le_bytes(self.take()?) as i64 as u64),
            F32 => {
                self.skip(4)?;
                None
            }
            U64 | I64 => Some(self.u64()?),
            F64 => {
                self.skip(8)?;
                None
            }
            STRING => {
                let n = self.len()?;
                self.skip(n)?;
                None
            }
            ARRAY => {
                if depth > 4 {
                    return Err("arrays nested too deep".into());
                }
                let elem = self.u32()?;
                let n = self.len()?;
                let fixed = match elem {
                    U8 | I8 | BOOL => Some(1),
                    U16 | I16 => Some(2),
                    U32 | I32 | F32 => Some(4),
                    U64 | I64 | F64 => Some(8),
                    _ => None,
                };
                match fixed {
                    Some(size) => {
                        let bytes = n.checked_mul(size).ok_or("an array longer than the file")?;
                        self.skip(bytes)?;
                    }
                    None => {
                        for _ in 0..n {
                            self.value(elem, depth + 1)?;
                        }
                    }
                }
                None
            }
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

/// Checks the header of the GGUF file at `path`; the error says what is wrong.
pub fn check(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut w = Walker {
        r: BufReader::new(file),
        left: size,
        wide: true,
    };
    if &w.take::<4>()? != b"GGUF" {
        return Err("no GGUF magic".into());
    }
    let version = w.u32()?;
    if !(1..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not 1, 2 or 3"));
    }
    w.wide = version >= 2;
    let tensors = w.len()?;
    let kvs = w.len()?;
    for _ in 0..kvs {
        let key = w.string()?;
        let t = w.u32()?;
        let v = w.value(t, 0)?;
        // candle drops trailing NULs from strings (some writers add them): so do we.
        if key.trim_end_matches('\0') == "general.alignment" && v == Some(0) {
            return Err("general.alignment is 0".into());
        }
    }
    for _ in 0..tensors {
        let name = w.string()?;
        let dims = w.u32()?;
        if dims > 4 {
            return Err(format!("tensor `{name}` has {dims} dimensions (at most 4)"));
        }
        let mut elems: u64 = 1;
        for _ in 0..dims {
            let d = if w.wide {
                w.u64()?
            } else {
                u64::from(w.u32()?)
            };
            elems = elems
                .checked_mul(d)
                .ok_or_else(|| format!("tensor `{name}`: its shape overflows"))?;
        }
        // No GGUF type stores an element in less than 1/8 byte: a tensor cannot have more
        // elements than 8 per byte of the file (this bounds what a read allocates).
        if elems / 8 > size {
            return Err(format!(
                "tensor `{name}` has {elems} elements, more than a {size}-byte file can hold"
            ));
        }
        w.u32()?; // dtype: candle checks it
        w.u64()?; // offset: candle seeks, a read past the end is an error there
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Vec<u8> {
        let mut b = (x.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(x.as_bytes());
        b
    }

    fn gguf(kvs: &[(&str, u32, Vec<u8>)], tensors: &[(&str, Vec<u64>)]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (k, t, v) in kvs {
            b.extend(s(k));
            b.extend_from_slice(&t.to_le_bytes());
            b.extend_from_slice(v);
        }
        for (n, dims) in tensors {
            b.extend(s(n));
            b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes());
        }
        b.resize(b.len() + 64, 0);
        b
    }

    fn checked(bytes: &[u8]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, bytes).unwrap();
        check(&p)
    }

    #[test]
    fn good_headers_pass_and_hostile_ones_are_refused() {
        let arch = ("general.architecture", STRING, s("llama"));
        assert!(checked(&gguf(std::slice::from_ref(&arch), &[("w", vec![8])])).is_ok());
        // Found by `make fuzz`: candle divided by this.
        let zero = ("general.alignment", U32, 0u32.to_le_bytes().to_vec());
        assert!(checked(&gguf(&[arch.clone(), zero], &[])).is_err());
        let padded = ("general.alignment\0\0\0", U8, vec![0u8]);
        assert!(checked(&gguf(&[arch.clone(), padded], &[])).is_err());
        // A string claiming 2^40 bytes.
        let mut long = (1u64 << 40).to_le_bytes().to_vec();
        long.extend_from_slice(b"x");
        assert!(checked(&gguf(&[("k", STRING, long)], &[])).is_err());
        // An array claiming 2^62 u64s.
        let mut arr = U64.to_le_bytes().to_vec();
        arr.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(checked(&gguf(&[("k", ARRAY, arr)], &[])).is_err());
        // A tensor far larger than the file.
        assert!(checked(&gguf(&[arch], &[("w", vec![1 << 20, 1 << 20])])).is_err());
        assert!(checked(b"GGUF").is_err());
    }
}
