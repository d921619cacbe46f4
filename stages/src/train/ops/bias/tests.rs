//! The bias node against `broadcast_add` (what candle-nn's Linear does): the same output bytes,
//! the same gradients up to summation order, and bytes independent of the thread count.

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{add_bias, linear};
use crate::test_util::in_rayon_pool;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 4.0 - 2.0).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
}

/// Output and gradients (x, bias) of Σ (x + bias)·R by `add`.
fn run(
    add: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
    shape: &[usize],
) -> [Vec<f32>; 3] {
    let d = *shape.last().expect("rank");
    let x = Var::from_tensor(&random(shape, 1)).expect("x");
    let b = Var::from_tensor(&random(&[d], 2)).expect("b");
    let y = add(x.as_tensor(), b.as_tensor()).expect("forward");
    let grads = (&y * random(shape, 3))
        .and_then(|t| t.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    let g = |v: &Var| values(grads.get(v.as_tensor()).expect("grad"));
    [values(&y), g(&x), g(&b)]
}

#[test]
fn same_output_bytes_and_gradients_as_broadcast_add() {
    for shape in [&[300, 40][..], &[3, 70, 9], &[1, 1], &[2, 3, 5, 64]] {
        let slow = run(|x, b| x.broadcast_add(b), shape);
        let fused = run(add_bias, shape);
        assert_eq!(slow[0], fused[0], "output of {shape:?}");
        assert_eq!(slow[1], fused[1], "input gradient of {shape:?}");
        for (a, b) in slow[2].iter().zip(&fused[2]) {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1.0),
                "bias gradient of {shape:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn bias_gradient_bytes_do_not_depend_on_the_thread_count() {
    let in_pool = |threads| in_rayon_pool(threads, || run(add_bias, &[5000, 24]));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let (one, three) = (in_pool(1), in_pool(3));
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(bits(a), bits(b));
    }
}

#[test]
fn linear_gives_candle_nn_linear_s_output_bytes() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let ours = linear(12, 7, vb.pp("l")).expect("linear");
    let theirs = candle_nn::Linear::new(ours.weight().clone(), ours.bias().cloned());
    for shape in [&[5, 12][..], &[2, 9, 12], &[2, 3, 4, 12]] {
        let x = random(shape, 9);
        let strided = random(&[shape[0], 12], 10)
            .t()
            .and_then(|t| t.t())
            .expect("view");
        assert_eq!(
            values(&ours.forward(&x).expect("ours")),
            values(&theirs.forward(&x).expect("theirs"))
        );
        assert_eq!(
            values(&ours.forward(&strided).expect("o")),
            values(&theirs.forward(&strided).expect("t"))
        );
    }
}
