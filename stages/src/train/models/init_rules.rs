//! How each encoder's weights start, by its reference's own `__init__` (read line by line; the
//! README's "Initialisation" table lists the sources). A rule is chosen per variable from its
//! name and shape; values come from a generator seeded by (seed, name), so the result does not
//! depend on the order the model creates its variables.
//!
//! The three PyTorch conventions the references combine:
//! - **PyTorch's default** for a layer nobody re-initialises: `nn.Linear` and `nn.ConvNd`
//!   weights `kaiming_uniform_(a = √5)`, which is U(±1/√fan_in), and their bias U(±1/√fan_in)
//!   with the weight's fan_in; LayerNorm and BatchNorm scale 1, shift 0; BatchNorm running
//!   mean 0, variance 1.
//! - **timm's `trunc_normal_(w, std = .02)`**: its bounds `a = -2, b = 2` are absolute, not in
//!   standard deviations, so at std 0.02 it truncates at ±100σ: in effect a plain N(0, 0.02²)
//!   (std 0.02, not the 0.88 × 0.02 of a 2σ truncation).
//! - Parameters made with `torch.zeros` / `torch.randn` keep those values unless an init
//!   touches them.

use candle_core::{Result, Shape, Tensor, Var};
use candle_nn::VarMap;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// How one variable starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Const(f32),
    /// N(0, std²), redrawn outside ±bound (absolute).
    Normal {
        std: f32,
        bound: f32,
    },
    /// U(lo, hi).
    Uniform {
        lo: f32,
        hi: f32,
    },
}

/// timm's `trunc_normal_(std = .02)` with its absolute bounds ±2.
pub const TIMM_TRUNC_02: Rule = Rule::Normal {
    std: 0.02,
    bound: 2.0,
};

/// U(±1/√fan_in): PyTorch's default for a Linear / Conv weight and its bias.
pub fn torch_uniform(fan_in: usize) -> Rule {
    let b = 1.0 / (fan_in.max(1) as f32).sqrt();
    Rule::Uniform { lo: -b, hi: b }
}

/// What a rule sees of a variable: its name, its shape, and the shape of the `weight` beside
/// it (a bias's layer).
pub struct VarInfo<'a> {
    pub name: &'a str,
    pub leaf: &'a str,
    pub dims: &'a [usize],
    /// The dims of `<stem>.weight`, for a `bias`.
    pub weight_dims: Option<Vec<usize>>,
}

impl VarInfo<'_> {
    /// A Linear (or Conv-as-Linear) weight: rank 2 `weight`.
    pub fn is_matrix(&self) -> bool {
        self.leaf == "weight" && self.dims.len() == 2
    }
    /// The bias of a Linear: its `weight` is rank 2; (fan_in of that weight).
    pub fn linear_bias_fan_in(&self) -> Option<usize> {
        match (self.leaf, self.weight_dims.as_deref()) {
            ("bias", Some(&[_, fan_in])) => Some(fan_in),
            _ => None,
        }
    }
}

/// PyTorch's default for every layer (see the module doc); None for a name it does not cover
/// (a bare parameter such as a class token).
pub fn torch_default(v: &VarInfo) -> Option<Rule> {
    Some(match v.leaf {
        "running_var" => Rule::Const(1.0),
        "running_mean" => Rule::Const(0.0),
        "weight" if v.dims.len() == 2 => torch_uniform(v.dims[1]),
        "weight" if v.dims.len() == 1 => Rule::Const(1.0),
        "bias" => match v.linear_bias_fan_in() {
            Some(fan_in) => torch_uniform(fan_in),
            None => Rule::Const(0.0),
        },
        _ => return None,
    })
}

/// The width adapters around the LLM block (`llm_adapter_up` / `_down`, the references'
/// `llama_dim_mapper1/2`).
fn is_adapter(name: &str) -> bool {
    name.starts_with("llm_adapter_")
}

/// LM4VisualEncoding's `PointTransformer` (`models/Point_BERT.py`): its `__init__` calls no
/// init at all (the `_init_weights` in that file belongs to the pretraining `MaskTransformer`),
/// so every Linear, Conv1d (lm4ve: Linear over points), BatchNorm, LayerNorm, the head and the
/// adapters keep PyTorch's default; `cls_token = torch.zeros`, `cls_pos = torch.randn`.
pub fn point_bert(v: &VarInfo) -> Rule {
    match v.name {
        "cls_token" => Rule::Const(0.0),
        "cls_pos" => Rule::Normal {
            std: 1.0,
            bound: f32::INFINITY,
        },
        _ => torch_default(v).unwrap_or(Rule::Const(0.0)),
    }
}

/// The video reference's `ViTLLaMA` (`video_understanding/modeling_finetune_llama.py`):
/// `trunc_normal_(head.weight, .02)`, then `apply(_init_weights)` (every `nn.Linear`: timm's
/// trunc-normal 0.02, bias 0; LayerNorm 1/0), then head weight and bias × `init_scale`
/// (`--init_scale`, 0.001); the tubelet embedding is an `nn.Conv3d`, which `_init_weights`
/// skips (PyTorch's default, fan_in = 3·t·p·p); `q_bias`/`v_bias` are `torch.zeros`; the
/// adapters are built after `apply`, so they keep PyTorch's default.
pub fn videomae(init_scale: f32) -> impl Fn(&VarInfo) -> Rule {
    move |v| {
        if is_adapter(v.name) || v.name.starts_with("patch_embed.") {
            return torch_default(v).unwrap_or(Rule::Const(0.0));
        }
        match (v.name, v.leaf) {
            ("head.weight", _) => Rule::Normal {
                std: 0.02 * init_scale,
                bound: 2.0 * init_scale,
            },
            (_, "q_bias" | "v_bias" | "bias") => Rule::Const(0.0),
            _ if v.is_matrix() => TIMM_TRUNC_02,
            _ => torch_default(v).unwrap_or(Rule::Const(0.0)),
        }
    }
}

/// The image reference's `ViTLLaMA` (`image_classification/models/vit_llama.py`,
/// `init_weights('')`): `trunc_normal_(pos_embed, .02)`, `normal_(cls_token, 1e-6)`, then
/// `named_apply(init_weights_vit_timm)`: every `nn.Linear` — the adapters too, which are built
/// before it runs — timm's trunc-normal 0.02 with zero bias; the patch embedding is an
/// `nn.Conv2d` (PyTorch's default, fan_in = 3·p·p); LayerNorms 1/0.
pub fn timm_vit(v: &VarInfo) -> Rule {
    if v.name.starts_with("patch_embed.") {
        return torch_default(v).unwrap_or(Rule::Const(0.0));
    }
    match (v.name, v.leaf) {
        ("pos_embed", _) => TIMM_TRUNC_02,
        ("cls_token", _) => Rule::Normal {
            std: 1e-6,
            bound: f32::INFINITY,
        },
        (_, "bias") => Rule::Const(0.0),
        _ if v.is_matrix() => TIMM_TRUNC_02,
        _ => torch_default(v).unwrap_or(Rule::Const(0.0)),
    }
}

/// Overwrites every variable of `varmap` by `rule`, each from its own generator seeded by
/// (seed, name).
pub fn init_by(varmap: &VarMap, seed: u64, rule: impl Fn(&VarInfo) -> Rule) -> Result<()> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("varmap lock poisoned".into()))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let (stem, leaf) = name.rsplit_once('.').unwrap_or(("", name));
        let weight_dims = (leaf == "bias")
            .then(|| weight_beside(&vars, stem))
            .flatten();
        let info = VarInfo {
            name,
            leaf,
            dims: var.dims(),
            weight_dims,
        };
        set(var, name, seed, rule(&info))?;
    }
    Ok(())
}

fn weight_beside(vars: &HashMap<String, Var>, stem: &str) -> Option<Vec<usize>> {
    let key = if stem.is_empty() {
        "weight".to_string()
    } else {
        format!("{stem}.weight")
    };
    vars.get(&key).map(|w| w.dims().to_vec())
}

/// Draws `rule`'s values for the variable `name`.
pub fn values(rule: Rule, n: usize, seed: u64, name: &str) -> Vec<f32> {
    let h = blake3::hash(format!("{seed}:{name}").as_bytes());
    let mut rng = ChaCha8Rng::from_seed(*h.as_bytes());
    match rule {
        Rule::Const(c) => vec![c; n],
        Rule::Uniform { lo, hi } => (0..n)
            .map(|_| lo + (hi - lo) * rng.random::<f32>())
            .collect(),
        Rule::Normal { std, bound } => (0..n)
            .map(|_| loop {
                let z = normal(&mut rng) * std;
                if z.abs() <= bound {
                    break z;
                }
            })
            .collect(),
    }
}

fn set(var: &Var, name: &str, seed: u64, rule: Rule) -> Result<()> {
    let shape: Shape = var.shape().clone();
    let v = values(rule, shape.elem_count(), seed, name);
    var.set(&Tensor::from_vec(v, shape, var.device())?.to_dtype(var.dtype())?)
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
