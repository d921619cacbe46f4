//! Operand layouts for candle's MKL matmul. With `--features mkl` candle refuses a matmul
//! operand whose two inner dimensions are neither row- nor column-major, or whose batch
//! dimensions are not evenly strided (`MatMulUnexpectedStriding`, "non-contiguous lhs");
//! candle's own gemm (the default build) takes any strides. Two models hand such a view to a
//! `Linear`: the image ViT's class token (a narrow of the token sequence) and VectorNet's
//! subgraph concat (candle builds a last-dimension `cat` with a broadcast side through
//! transposes). [`for_matmul`] copies those to contiguous memory in the MKL build only, so the
//! default build runs exactly the ops it ran before and its artifacts keep their bytes
//! (gemm's kernel choice may depend on the layout; MKL's artifacts already differ from
//! gemm's for the same key, which key.rs allows between BLAS backends).

use candle_core::{Result, Tensor};

/// `t` as candle's MKL matmul accepts it: contiguous in the MKL build (a no-op when it
/// already is), unchanged otherwise.
pub fn for_matmul(t: Tensor) -> Result<Tensor> {
    if cfg!(feature = "mkl") {
        t.contiguous()
    } else {
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, D};

    /// The two layouts the models produce multiply in either build, with the same values as
    /// their contiguous copies.
    #[test]
    fn strided_operands_multiply() {
        let dev = Device::Cpu;
        let w = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((3, 8))
            .unwrap();
        // The class token: row 0 of every sequence, [B, d] with row stride T·d.
        let seq = Tensor::arange(0f32, 2.0 * 5.0 * 8.0, &dev)
            .unwrap()
            .reshape((2, 5, 8))
            .unwrap();
        let cls = for_matmul(seq.narrow(1, 0, 1).unwrap().squeeze(1).unwrap()).unwrap();
        let y = cls.matmul(&w.t().unwrap()).unwrap();
        let want = cls.contiguous().unwrap().matmul(&w.t().unwrap()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        // A last-dimension cat with a broadcast side, then a batched Linear.
        let h = Tensor::ones((4, 3, 4), DType::F32, &dev).unwrap();
        let pooled = h.max_keepdim(1).unwrap().broadcast_as(h.shape()).unwrap();
        let x = for_matmul(Tensor::cat(&[&h, &pooled], D::Minus1).unwrap()).unwrap();
        let lin = candle_nn::Linear::new(w, None);
        let y = candle_core::Module::forward(&lin, &x).unwrap();
        assert_eq!(y.dims(), &[4, 3, 3]);
    }
}
