//! The fused node against candle-nn's layer_norm_slow (the ops it replaces), forward and
//! gradients, and its independence from the thread count.

use candle_core::{DType, Device, Tensor, Var, D};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::layer_norm;
use crate::test_util::{f32_bits, in_rayon_pool, max_abs_diff};

fn random(shape: &[usize], scale: f32, offset: f32, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| offset + scale * (rng.random::<f32>() * 2.0 - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// Output and the three gradients of Σ y·R, by `norm`.
fn run(
    norm: impl Fn(&Tensor, &Tensor, &Tensor) -> candle_core::Result<Tensor>,
    shape: &[usize],
    seed: u64,
) -> [Tensor; 4] {
    let d = *shape.last().expect("rank");
    let x = Var::from_tensor(&random(shape, 3.0, 10.0, seed)).expect("x");
    let w = Var::from_tensor(&random(&[d], 1.0, 1.0, seed + 1)).expect("w");
    let b = Var::from_tensor(&random(&[d], 0.5, 0.0, seed + 2)).expect("b");
    let y = norm(x.as_tensor(), w.as_tensor(), b.as_tensor()).expect("forward");
    let r = random(shape, 1.0, 0.0, seed + 3);
    let grads = (&y * &r)
        .and_then(|t| t.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    let g = |v: &Var| grads.get(v.as_tensor()).expect("grad").clone();
    [y.clone(), g(&x), g(&w), g(&b)]
}

const SHAPES: &[&[usize]] = &[&[130, 64], &[3, 5, 7], &[1, 1], &[200, 33], &[2, 17, 128]];

#[test]
fn forward_and_gradients_equal_layer_norm_slow() {
    for (k, shape) in SHAPES.iter().enumerate() {
        let slow = run(
            |x, w, b| candle_nn::ops::layer_norm_slow(x, w, b, 1e-5),
            shape,
            k as u64,
        );
        let fused = run(|x, w, b| layer_norm(x, w, b, 1e-5), shape, k as u64);
        for (i, what) in ["y", "dx", "dweight", "dbias"].iter().enumerate() {
            let scale = slow[i]
                .abs()
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.max(0))
                .and_then(|t| t.to_scalar::<f32>())
                .expect("scale")
                .max(1.0);
            let diff = max_abs_diff(&slow[i], &fused[i]);
            assert!(
                diff <= 2e-5 * scale,
                "{what} of {shape:?}: fused differs from layer_norm_slow by {diff} (scale {scale})"
            );
        }
    }
}

#[test]
fn bytes_do_not_depend_on_the_thread_count() {
    let in_pool = |threads| {
        in_rayon_pool(threads, || {
            run(|x, w, b| layer_norm(x, w, b, 1e-6), &[1000, 48], 7)
        })
    };
    let (one, three) = (in_pool(1), in_pool(3));
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(f32_bits(a), f32_bits(b));
    }
}

#[test]
fn a_strided_input_is_normed_like_its_contiguous_copy() {
    let x = random(&[16, 24], 2.0, -3.0, 11).t().expect("t"); // [24, 16], strided
    let w = random(&[16], 1.0, 1.0, 12);
    let b = random(&[16], 1.0, 0.0, 13);
    let strided = layer_norm(&x, &w, &b, 1e-5).expect("strided");
    let copy = layer_norm(&x.contiguous().expect("c"), &w, &b, 1e-5).expect("copy");
    assert_eq!(max_abs_diff(&strided, &copy), 0.0);
}

#[test]
fn other_dtypes_keep_the_slow_path() {
    let x = random(&[4, 8], 1.0, 0.0, 21)
        .to_dtype(DType::F64)
        .expect("f64");
    let w = Tensor::ones(8, DType::F64, &Device::Cpu).expect("w");
    let b = Tensor::zeros(8, DType::F64, &Device::Cpu).expect("b");
    let y = layer_norm(&x, &w, &b, 1e-5).expect("f64 norm");
    let mean = y
        .mean(D::Minus1)
        .and_then(|m| m.abs())
        .and_then(|m| m.max(0))
        .and_then(|m| m.to_scalar::<f64>())
        .expect("mean");
    assert!(y.dtype() == DType::F64 && mean < 1e-9);
}
