//! Random inputs of the real shapes for `lm4ve bench-train` (what each task's
//! `bench_setup` builds its batch from).

use anyhow::Result;
use candle_core::{Device, Tensor};

pub fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1.0, shape, device)?)
}

/// `b` labels spread over `classes`.
pub fn labels(b: usize, classes: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..b).map(|i| (i * 7 % classes.max(1)) as u32).collect();
    Ok(Tensor::from_vec(v, b, device)?)
}

/// A key mask [b, n] with the first `real` entries of each row set (the rest padding).
pub fn mask(b: usize, n: usize, real: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..b * n)
        .map(|i| f32::from(u8::from(i % n < real)))
        .collect();
    Ok(Tensor::from_vec(v, (b, n), device)?)
}
