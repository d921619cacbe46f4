//! A learned position table of another grid, resized as DeiT's `main.py --finetune` does: the
//! class token's entry kept, the patches' entries laid out as their `g × g` grid and resized
//! to the model's grid with PyTorch's `F.interpolate(mode='bicubic', align_corners=False)`
//! (cubic convolution, A = −0.75, source index `(dst + ½)·in/out − ½`, neighbours clamped to
//! the edge, no antialias). A distilled DeiT table (class and distillation token before the
//! patches) loses the distillation token's entry, as lm4ve's model has no such token.

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

/// What a resize did, for the init report.
#[derive(Debug, Clone, PartialEq)]
pub struct Resized {
    pub from_grid: usize,
    pub to_grid: usize,
    pub dropped_dist_token: bool,
}

impl Resized {
    pub fn note(&self) -> String {
        format!(
            "pos_embed resized from a {0}×{0} to a {1}×{1} patch grid (bicubic, as DeiT's --finetune){2}",
            self.from_grid,
            self.to_grid,
            if self.dropped_dist_token {
                "; the distillation token's entry dropped"
            } else {
                ""
            }
        )
    }
}

fn square_side(n: usize) -> Option<usize> {
    let s = (n as f64).sqrt().round() as usize;
    (s * s == n && s > 0).then_some(s)
}

/// `table` ([1, extra + g², d] from a checkpoint) as the model's `[1, 1 + G², d]`
/// (`model_len` = 1 + G²). Errors name what does not fit.
pub fn resize(table: &Tensor, model_len: usize) -> Result<(Tensor, Resized)> {
    let &[1, len, d] = table.dims() else {
        bail!(
            "pos_embed has shape {:?}; a ViT's is [1, tokens, width]",
            table.dims()
        );
    };
    let Some(to_grid) = model_len.checked_sub(1).and_then(square_side) else {
        bail!("the model's pos_embed ({model_len} entries) is not a class token and a square grid");
    };
    // One extra token (class), or two (class and DeiT's distillation token).
    let (extra, from_grid) = match (
        len.checked_sub(1).and_then(square_side),
        len.checked_sub(2).and_then(square_side),
    ) {
        (Some(g), _) => (1, g),
        (None, Some(g)) => (2, g),
        _ => bail!(
            "pos_embed has {len} entries: neither a class token nor a class and a distillation token before a square grid of patches"
        ),
    };
    let dtype = table.dtype();
    let flat: Vec<f32> = table.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut out = Vec::with_capacity(model_len * d);
    out.extend_from_slice(&flat[..d]); // the class token's entry
    let grid = &flat[extra * d..];
    out.extend(bicubic(grid, from_grid, to_grid, d));
    let t = Tensor::from_vec(out, (1, model_len, d), table.device())?.to_dtype(dtype)?;
    Ok((
        t,
        Resized {
            from_grid,
            to_grid,
            dropped_dist_token: extra == 2,
        },
    ))
}

/// PyTorch's `get_cubic_upsample_coefficients` with A = −0.75.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let u = 1.0 - t;
    [far(t + 1.0), near(t), near(u), far(u + 1.0)]
}

/// For each output index: the 4 clamped source indices and their weights.
fn taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|o| {
            let real = scale * (o as f32 + 0.5) - 0.5;
            let base = real.floor();
            let w = cubic_weights(real - base);
            let at = |k: i64| (base as i64 + k).clamp(0, input as i64 - 1) as usize;
            ([at(-1), at(0), at(1), at(2)], w)
        })
        .collect()
}

/// A `g × g × d` grid (row-major, channels last) resized to `n × n × d`, as PyTorch's
/// `upsample_bicubic2d` computes it: each output row interpolates four source rows, each of
/// those first interpolated along x (its `cubic_interp1d` order).
fn bicubic(grid: &[f32], g: usize, n: usize, d: usize) -> Vec<f32> {
    let (ty, tx) = (taps(g, n), taps(g, n));
    let mut out = vec![0f32; n * n * d];
    for (oy, (ys, wy)) in ty.iter().enumerate() {
        for (ox, (xs, wx)) in tx.iter().enumerate() {
            for c in 0..d {
                let at = |y: usize, x: usize| grid[(y * g + x) * d + c];
                let row = |y: usize| {
                    at(y, xs[0]) * wx[0]
                        + at(y, xs[1]) * wx[1]
                        + at(y, xs[2]) * wx[2]
                        + at(y, xs[3]) * wx[3]
                };
                out[(oy * n + ox) * d + c] = row(ys[0]) * wy[0]
                    + row(ys[1]) * wy[1]
                    + row(ys[2]) * wy[2]
                    + row(ys[3]) * wy[3];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Values written by `scripts/fixtures/pos_embed_interp.py` with PyTorch's
    /// `F.interpolate(..., mode='bicubic', align_corners=False)`, as DeiT's `--finetune` calls it.
    const FIXTURE: &str = include_str!("../../../tests/fixtures/pos_embed_interp.json");

    #[test]
    fn resize_matches_pytorch_bicubic_as_deit_finetune_calls_it() {
        let cases: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
        let cases = cases["cases"].as_array().unwrap();
        assert!(cases.len() >= 3);
        for case in cases {
            let (g, n, d, extra) = (
                case["from"].as_u64().unwrap() as usize,
                case["to"].as_u64().unwrap() as usize,
                case["dim"].as_u64().unwrap() as usize,
                case["extra"].as_u64().unwrap() as usize,
            );
            let input: Vec<f32> = serde_json::from_value(case["input"].clone()).unwrap();
            let want: Vec<f32> = serde_json::from_value(case["output"].clone()).unwrap();
            let t = Tensor::from_vec(input, (1, extra + g * g, d), &Device::Cpu).unwrap();
            let (got, what) = resize(&t, 1 + n * n).unwrap();
            assert_eq!((what.from_grid, what.to_grid), (g, n));
            assert_eq!(what.dropped_dist_token, extra == 2);
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got.len(), want.len());
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // PyTorch sums the same four taps in the same order in f32; a few ulps at most.
            assert!(worst < 1e-5, "{g}→{n}: max |diff| {worst}");
        }
    }

    #[test]
    fn the_same_grid_is_returned_unchanged() {
        let v: Vec<f32> = (0..(1 + 9) * 2).map(|i| i as f32 * 0.37 - 1.0).collect();
        let t = Tensor::from_vec(v.clone(), (1, 10, 2), &Device::Cpu).unwrap();
        let (got, _) = resize(&t, 10).unwrap();
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        for (a, b) in got.iter().zip(&v) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn tables_that_are_no_grid_are_named_errors() {
        let t = Tensor::zeros((1, 7, 4), DType::F32, &Device::Cpu).unwrap();
        let err = resize(&t, 17).err().unwrap().to_string();
        assert!(err.contains("7 entries"), "{err}");
        let t = Tensor::zeros((1, 10, 4), DType::F32, &Device::Cpu).unwrap();
        let err = resize(&t, 12).err().unwrap().to_string();
        assert!(err.contains("not a class token and a square grid"), "{err}");
    }
}
