//! The weights of one block under their roles ([`Role`]), loaded by the canonical names of
//! the one name table (`llm::block_format::TENSORS`). A role an architecture lacks (biases in
//! LLaMA, `up` in OPT) is None.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::llm::block_format::{tensors_of, BlockConfig, Role};

#[derive(Clone)]
pub(crate) struct Weights {
    pub norm1: Tensor,
    pub norm1_b: Option<Tensor>,
    pub q: Tensor,
    pub q_b: Option<Tensor>,
    pub k: Tensor,
    pub k_b: Option<Tensor>,
    pub v: Tensor,
    pub v_b: Option<Tensor>,
    pub o: Tensor,
    pub o_b: Option<Tensor>,
    pub norm2: Tensor,
    pub norm2_b: Option<Tensor>,
    /// LLaMA `gate_proj` / OPT `fc1`.
    pub mlp_in: Tensor,
    pub mlp_in_b: Option<Tensor>,
    /// LLaMA `up_proj` only.
    pub mlp_up: Option<Tensor>,
    /// LLaMA `down_proj` / OPT `fc2`.
    pub mlp_out: Tensor,
    pub mlp_out_b: Option<Tensor>,
}

/// Roles whose tensors act inside matmuls (what autocast converts); norms stay f32.
fn is_matmul(role: Role) -> bool {
    !matches!(
        role,
        Role::Norm1 | Role::Norm1Bias | Role::Norm2 | Role::Norm2Bias
    )
}

impl Weights {
    /// Every tensor of `cfg`'s architecture, by its canonical name, through `vb` (which
    /// checks each shape).
    pub fn load(cfg: &BlockConfig, vb: &VarBuilder) -> Result<Self> {
        let get = |role: Role| -> Result<Option<Tensor>> {
            match tensors_of(cfg.arch).find(|t| t.role == role) {
                Some(t) => vb.get(cfg.shape_of(role), t.name).map(Some),
                None => Ok(None),
            }
        };
        let need = |role: Role| -> Result<Tensor> {
            get(role)?.ok_or_else(|| {
                candle_core::Error::Msg(format!("llm block: a {} block has no {role:?}", cfg.arch))
            })
        };
        Ok(Weights {
            norm1: need(Role::Norm1)?,
            norm1_b: get(Role::Norm1Bias)?,
            q: need(Role::Q)?,
            q_b: get(Role::QBias)?,
            k: need(Role::K)?,
            k_b: get(Role::KBias)?,
            v: need(Role::V)?,
            v_b: get(Role::VBias)?,
            o: need(Role::O)?,
            o_b: get(Role::OBias)?,
            norm2: need(Role::Norm2)?,
            norm2_b: get(Role::Norm2Bias)?,
            mlp_in: need(Role::MlpIn)?,
            mlp_in_b: get(Role::MlpInBias)?,
            mlp_up: get(Role::MlpUp)?,
            mlp_out: need(Role::MlpOut)?,
            mlp_out_b: get(Role::MlpOutBias)?,
        })
    }

    /// The tensor of `role`, if this architecture has one.
    pub fn get(&self, role: Role) -> Option<&Tensor> {
        match role {
            Role::Norm1 => Some(&self.norm1),
            Role::Norm1Bias => self.norm1_b.as_ref(),
            Role::Q => Some(&self.q),
            Role::QBias => self.q_b.as_ref(),
            Role::K => Some(&self.k),
            Role::KBias => self.k_b.as_ref(),
            Role::V => Some(&self.v),
            Role::VBias => self.v_b.as_ref(),
            Role::O => Some(&self.o),
            Role::OBias => self.o_b.as_ref(),
            Role::Norm2 => Some(&self.norm2),
            Role::Norm2Bias => self.norm2_b.as_ref(),
            Role::MlpIn => Some(&self.mlp_in),
            Role::MlpInBias => self.mlp_in_b.as_ref(),
            Role::MlpUp => self.mlp_up.as_ref(),
            Role::MlpOut => Some(&self.mlp_out),
            Role::MlpOutBias => self.mlp_out_b.as_ref(),
        }
    }

    /// LLaMA's up projection (the SwiGLU path asks for it only on LLaMA blocks).
    pub fn up(&self) -> Result<&Tensor> {
        match &self.mlp_up {
            Some(t) => Ok(t),
            None => candle_core::bail!("llm block: internal error, a LLaMA block without up_proj"),
        }
    }

    /// The same weights with `f(role, tensor)` applied to each.
    pub fn map(&self, f: impl Fn(Role, &Tensor) -> Result<Tensor>) -> Result<Self> {
        let one = |r: Role, t: &Tensor| f(r, t);
        let opt = |r: Role, t: &Option<Tensor>| t.as_ref().map(|t| f(r, t)).transpose();
        Ok(Weights {
            norm1: one(Role::Norm1, &self.norm1)?,
            norm1_b: opt(Role::Norm1Bias, &self.norm1_b)?,
            q: one(Role::Q, &self.q)?,
            q_b: opt(Role::QBias, &self.q_b)?,
            k: one(Role::K, &self.k)?,
            k_b: opt(Role::KBias, &self.k_b)?,
            v: one(Role::V, &self.v)?,
            v_b: opt(Role::VBias, &self.v_b)?,
            o: one(Role::O, &self.o)?,
            o_b: opt(Role::OBias, &self.o_b)?,
            norm2: one(Role::Norm2, &self.norm2)?,
            norm2_b: opt(Role::Norm2Bias, &self.norm2_b)?,
            mlp_in: one(Role::MlpIn, &self.mlp_in)?,
            mlp_in_b: opt(Role::MlpInBias, &self.mlp_in_b)?,
            mlp_up: opt(Role::MlpUp, &self.mlp_up)?,
            mlp_out: one(Role::MlpOut, &self.mlp_out)?,
            mlp_out_b: opt(Role::MlpOutBias, &self.mlp_out_b)?,
        })
    }

    /// The autocast copy: matrices and projection biases in `dtype` (bf16 or f16: they act
    /// inside those matmuls); norm weights and biases stay f32 (norms run in f32).
    pub fn to_autocast(&self, dtype: DType) -> Result<Self> {
        self.map(|role, t| {
            if is_matmul(role) {
                t.to_dtype(dtype)
            } else {
                Ok(t.clone())
            }
        })
    }
}
