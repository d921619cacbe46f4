//! Transposing packed RGB (3-byte pixels): `rows` lines of `cols` pixels → `cols` lines of
//! `rows` pixels. The bicubic resampler's horizontal pass runs on the transposed crop (a
//! column becomes a contiguous line, so its sums vectorise: `resize`), which makes this
//! transpose, twice per training view, a tenth of the image loader's time when done one
//! pixel at a time. With AVX2, 8 × 8 pixel blocks move as eight 256-bit registers (each
//! pixel widened to 4 bytes, a 32-bit 8 × 8 transpose, narrowed back); the edges that do not
//! fill a block, and CPUs without AVX2, take the scalar tiles. Both give the same bytes
//! (`tests`).

/// Line `r` of the input is `line(r)` (at least `cols · 3` bytes); `dst` receives the
/// `rows · cols · 3` bytes of the transposed image, pixel (c, r) at `(c · rows + r) · 3`.
pub(crate) fn transpose_rows<'a>(
    line: impl Fn(usize) -> &'a [u8],
    rows: usize,
    cols: usize,
    dst: &mut [u8],
) {
    assert!(dst.len() >= rows * cols * 3, "transpose: output too small");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let (rows8, cols8) = (rows / 8 * 8, cols / 8 * 8);
        // SAFETY: the CPU has AVX2 (checked above); `dst` holds rows·cols·3 bytes (asserted)
        // and every line at least cols·3 (sliced inside).
        unsafe { blocks_avx2(&line, rows8, cols8, rows, cols, dst.as_mut_ptr()) };
        tiles(&line, 0, cols8..cols, rows, cols, dst);
        tiles(&line, rows8, 0..cols8, rows, cols, dst);
        return;
    }
    tiles(&line, 0, 0..cols, rows, cols, dst);
}

/// Pixels (c, r) for r in `r_start..rows`, c in `c_range`, in 32 × 32 tiles (both sides stay
/// in cache). Pixels move as 4-byte words (one load, one store); the 4th byte lands on the
/// first byte of pixel (c, r + 1), which is written after it (rows ascend within a column and
/// the range runs to the last row), so only the last row and a line's last pixel move as 3
/// bytes. Raw pointers: the bounds are checked once per line, not per pixel.
fn tiles<'a>(
    line: &impl Fn(usize) -> &'a [u8],
    r_start: usize,
    c_range: std::ops::Range<usize>,
    rows: usize,
    cols: usize,
    dst: &mut [u8],
) {
    const T: usize = 32;
    assert!(dst.len() >= rows * cols * 3 && c_range.end <= cols);
    let out = dst.as_mut_ptr();
    for r0 in (r_start..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in c_range.clone().step_by(T) {
            let c1 = (c0 + T).min(c_range.end);
            for r in r0..r1 {
                let l = &line(r)[..cols * 3];
                let words = if r + 1 < rows { c1.min(cols - 1) } else { c0 };
                let words = words.max(c0);
                // SAFETY: pixel c < cols of line r: bytes c·3 .. c·3 + 4 are inside `l`
                // (cols·3 bytes) for c < cols − 1, c·3 + 3 for every c; its destination
                // (c·rows + r)·3 .. + 4 is inside `dst` (rows·cols·3 bytes) for r < rows − 1,
                // + 3 for every r.
                unsafe {
                    for c in c0..words {
                        let d = out.add((c * rows + r) * 3);
                        std::ptr::copy_nonoverlapping(l.as_ptr().add(c * 3), d, 4);
                    }
                    for c in words..c1 {
                        let d = out.add((c * rows + r) * 3);
                        std::ptr::copy_nonoverlapping(l.as_ptr().add(c * 3), d, 3);
                    }
                }
            }
        }
    }
}

/// Pixels (c, r) for r < `rows8`, c < `cols8` (multiples of 8), in 8 × 8 blocks: each block
/// row's 24 bytes are read exactly (two overlapping 16-byte loads) and widened to 4-byte
/// pixels with a zero byte, the 8 × 8 block of 32-bit words is transposed with the usual
/// unpack/permute network, and each column is narrowed back and written as exactly 24 bytes.
/// Columns are taken in groups of 64 so the lines being written stay in cache.
///
/// # Safety
/// The CPU has AVX2; `dst` points to `rows · cols · 3` writable bytes; `rows8 ≤ rows`,
/// `cols8 ≤ cols`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blocks_avx2<'a>(
    line: &impl Fn(usize) -> &'a [u8],
    rows8: usize,
    cols8: usize,
    rows: usize,
    cols: usize,
    dst: *mut u8,
) {
    use std::arch::x86_64::*;
    const GROUP: usize = 64;
    const Z: i8 = -128; // a shuffle index with the high bit set writes a zero byte
                        // Lane 0 holds bytes 0..16 of the row's 24 (pixels 0..4 in bytes 0..12), lane 1 bytes
                        // 8..24 (pixels 4..8 in its bytes 4..16).
    let widen = _mm256_setr_epi8(
        0, 1, 2, Z, 3, 4, 5, Z, 6, 7, 8, Z, 9, 10, 11, Z, 4, 5, 6, Z, 7, 8, 9, Z, 10, 11, 12, Z,
        13, 14, 15, Z,
    );
    let narrow = _mm256_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, Z, Z, Z, Z, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14,
        Z, Z, Z, Z,
    );
    for g in (0..cols8).step_by(GROUP) {
        let g_end = (g + GROUP).min(cols8);
        for r0 in (0..rows8).step_by(8) {
            let src: [*const u8; 8] = std::array::from_fn(|i| line(r0 + i)[..cols * 3].as_ptr());
            for c0 in (g..g_end).step_by(8) {
                let v: [__m256i; 8] = std::array::from_fn(|i| {
                    // SAFETY: c0 + 8 ≤ cols: bytes c0·3 .. c0·3 + 24 are inside the line.
                    let p = unsafe { src[i].add(c0 * 3) };
                    let lo = unsafe { _mm_loadu_si128(p.cast()) };
                    let hi = unsafe { _mm_loadu_si128(p.add(8).cast()) };
                    _mm256_shuffle_epi8(_mm256_set_m128i(hi, lo), widen)
                });
                let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
                let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
                let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
                let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
                let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
                let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
                let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
                let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
                let u0 = _mm256_unpacklo_epi64(t0, t2);
                let u1 = _mm256_unpackhi_epi64(t0, t2);
                let u2 = _mm256_unpacklo_epi64(t1, t3);
                let u3 = _mm256_unpackhi_epi64(t1, t3);
                let u4 = _mm256_unpacklo_epi64(t4, t6);
                let u5 = _mm256_unpackhi_epi64(t4, t6);
                let u6 = _mm256_unpacklo_epi64(t5, t7);
                let u7 = _mm256_unpackhi_epi64(t5, t7);
                let col = [
                    _mm256_permute2x128_si256(u0, u4, 0x20),
                    _mm256_permute2x128_si256(u1, u5, 0x20),
                    _mm256_permute2x128_si256(u2, u6, 0x20),
                    _mm256_permute2x128_si256(u3, u7, 0x20),
                    _mm256_permute2x128_si256(u0, u4, 0x31),
                    _mm256_permute2x128_si256(u1, u5, 0x31),
                    _mm256_permute2x128_si256(u2, u6, 0x31),
                    _mm256_permute2x128_si256(u3, u7, 0x31),
                ];
                for (j, &c) in col.iter().enumerate() {
                    let w = _mm256_shuffle_epi8(c, narrow);
                    let hi = _mm256_extracti128_si256(w, 1);
                    // SAFETY: the 24 bytes of column c0 + j, rows r0 .. r0 + 8, lie inside
                    // `dst`; the first store's 4 spare bytes (12..16) are rewritten by the
                    // second, and nothing is written past byte 24.
                    unsafe {
                        let d = dst.add(((c0 + j) * rows + r0) * 3);
                        _mm_storeu_si128(d.cast(), _mm256_castsi256_si128(w));
                        _mm_storel_epi64(d.add(12).cast(), hi);
                        let last = _mm_extract_epi32(hi, 2) as u32;
                        std::ptr::write_unaligned(d.add(20).cast::<u32>(), last);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(src: &[u8], rows: usize, cols: usize) -> Vec<u8> {
        let mut out = vec![0u8; rows * cols * 3];
        for r in 0..rows {
            for c in 0..cols {
                for ch in 0..3 {
                    out[(c * rows + r) * 3 + ch] = src[(r * cols + c) * 3 + ch];
                }
            }
        }
        out
    }

    #[test]
    fn every_size_transposes_to_the_naive_loops_bytes() {
        let mut sizes: Vec<(usize, usize)> = (1..=20)
            .flat_map(|r| (1..=20).map(move |c| (r, c)))
            .collect();
        sizes.extend([
            (265, 350),
            (224, 301),
            (97, 64),
            (64, 97),
            (8, 200),
            (200, 8),
        ]);
        for (rows, cols) in sizes {
            let src: Vec<u8> = (0..rows * cols * 3)
                .map(|i| (i * 7 + i / 5) as u8)
                .collect();
            // Lines with spare bytes after them (a window on wider rows), and a dirty output.
            let stride = cols * 3 + 5;
            let mut wide = vec![0xEEu8; rows * stride];
            for r in 0..rows {
                wide[r * stride..r * stride + cols * 3]
                    .copy_from_slice(&src[r * cols * 3..(r + 1) * cols * 3]);
            }
            let mut out = vec![0xABu8; rows * cols * 3];
            transpose_rows(
                |r| &wide[r * stride..(r + 1) * stride],
                rows,
                cols,
                &mut out,
            );
            assert_eq!(out, naive(&src, rows, cols), "{rows} x {cols}");
            let mut scalar = vec![0xCDu8; rows * cols * 3];
            tiles(
                &|r| &wide[r * stride..(r + 1) * stride],
                0,
                0..cols,
                rows,
                cols,
                &mut scalar,
            );
            assert_eq!(scalar, out, "scalar tiles, {rows} x {cols}");
        }
    }
}
