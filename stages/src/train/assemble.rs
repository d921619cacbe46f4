//! Model assembly, shared by training, evaluation, the dry run and the benches: which block
//! core a mode builds (`core_of`), the block from an `llm.block` artifact, the task's encoder
//! around it and its initialisation (`build_model`), trained weights back into a built model,
//! and the names checkpoints give the weights.

use super::block::{BlockCore, BlockMode, LlmBlock, MlpBlock, MlpConfig};
use super::task::Task;
use crate::llm::block_format::BlockConfig;
use anyhow::{Context, Result};
use candle_core::{DType, Device, Var};
use candle_nn::{VarBuilder, VarMap};
use lm4ve_pipeline::Upstream;

/// The model and everything needed to train or run it.
pub struct Built<M> {
    pub varmap: VarMap,
    pub model: M,
    /// The block's (or the MLP's) weights as Vars when they train, named `llm_block.<tensor>`
    /// (`llm_block.<i>.<tensor>` in a stack, `llm_mlp.<tensor>` for the MLP).
    pub block_vars: Vec<(String, Var)>,
}

/// Seed of layer `i` of a randomly initialised stack: layer 0 keeps the stage's seed (a
/// single random block is what it always was), later layers get their own streams.
fn layer_seed(seed: u64, i: usize) -> u64 {
    if i == 0 {
        seed
    } else {
        seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The block of `mode` from the `llm.block` artifact: its layers (pretrained or seeded random,
/// stacked with the final norm once after the last), or for `mlp` the MLP of its shape (only
/// the file's header is read); `mlp_hidden` overrides the MLP's FFN size.
fn load_block(
    up: Option<&Upstream>,
    mode: BlockMode,
    mlp_hidden: Option<usize>,
    seed: u64,
    device: &Device,
) -> Result<Option<(BlockCore, BlockMode)>> {
    if mode == BlockMode::None {
        return Ok(None);
    }
    let up = up.context("the block stage is not built")?;
    let path = up
        .manifest
        .file_path(&up.manifest_path, "block.safetensors")
        .context("the `block` stage has no block.safetensors; it must be an llm.block stage")?;
    let (cfg, n, _) = crate::llm::block_file_config(&path)?;
    let read = || Ok(crate::llm::load_block_stack(&path)?.1);
    let core = core_of(
        mode,
        &cfg,
        n,
        LayerWeights::File(&read),
        mlp_hidden,
        seed,
        device,
    )?;
    Ok(Some((core, mode)))
}

/// Where the layers of a mode that uses pretrained weights come from.
pub enum LayerWeights<'a> {
    /// The layers of the block file (read only when the mode uses them).
    File(&'a dyn Fn() -> Result<Vec<BlockTensors>>),
    /// Seeded random layers (the benchmarks time shapes, not values).
    Random,
    /// The real shapes with no memory (the dry run counts; nothing runs).
    ShapeOnly,
}

/// The block core of `mode` for `n` layers of shape `cfg`: the pretrained layers, seeded
/// random ones, or for `mlp` the MLP of that shape (`mlp_hidden` overrides its FFN size).
/// Not for `none`. The one place that decides which core a mode builds, for training,
/// evaluation, the dry run and the benches.
pub fn core_of(
    mode: BlockMode,
    cfg: &BlockConfig,
    n: usize,
    weights: LayerWeights,
    mlp_hidden: Option<usize>,
    seed: u64,
    device: &Device,
) -> Result<BlockCore> {
    let shape_only = matches!(weights, LayerWeights::ShapeOnly);
    let random_stack = || {
        BlockCore::stack(
            (0..n)
                .map(|i| {
                    if shape_only {
                        LlmBlock::shape_only(cfg)
                    } else {
                        LlmBlock::random(cfg, layer_seed(seed, i), device)
                    }
                })
                .collect::<Result<_>>()?,
        )
    };
    Ok(match mode {
        BlockMode::None => anyhow::bail!("mode none has no block"),
        BlockMode::Mlp => {
            let mlp = MlpConfig::of_block(cfg, mlp_hidden);
            BlockCore::Mlp(if shape_only {
                MlpBlock::shape_only(&mlp)?
            } else {
                MlpBlock::random(&mlp, seed, device)?
            })
        }
        m if m.is_random() => random_stack()?,
        _ => match weights {
            LayerWeights::File(read) => {
                let layers = read()?;
                anyhow::ensure!(
                    layers.len() == n,
                    "the block file holds {} layers, its metadata says {n}",
                    layers.len()
                );
                BlockCore::stack(
                    layers
                        .iter()
                        .map(|t| LlmBlock::from_tensors(cfg, t, device))
                        .collect::<Result<_>>()?,
                )?
            }
            LayerWeights::Random | LayerWeights::ShapeOnly => random_stack()?,
        },
    })
}

/// The tensors of one layer by name: (shape, values).
pub type BlockTensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Makes the weights of a trainable core Vars, named for checkpoints: `llm_block.<tensor>`
/// for one layer (as before stacks existed), `llm_block.<i>.<tensor>` for layer i of a stack,
/// `llm_mlp.<tensor>` for the MLP.
pub fn trainable_vars(core: &mut BlockCore) -> Result<Vec<(String, Var)>> {
    Ok(match core {
        BlockCore::Llm(layers) => {
            let n = layers.len();
            let mut out = Vec::new();
            for (i, b) in layers.iter_mut().enumerate() {
                let names: Vec<String> = b
                    .config()
                    .tensor_shapes()
                    .iter()
                    .map(|(t, _)| t.to_string())
                    .collect();
                let prefix = if n == 1 {
                    "llm_block.".to_string()
                } else {
                    format!("llm_block.{i}.")
                };
                let vars = b.make_trainable()?;
                out.extend(
                    names
                        .into_iter()
                        .zip(vars)
                        .map(|(t, v)| (format!("{prefix}{t}"), v)),
                );
            }
            out
        }
        BlockCore::Mlp(m) => m
            .make_trainable()?
            .into_iter()
            .map(|(t, v)| (format!("llm_mlp.{t}"), v))
            .collect(),
    })
}

/// The model of a train stage: the task's encoder around the block core of `mode` from the
/// block artifact, initialised from `seed` as the task's model is.
#[allow(clippy::too_many_arguments)] // the model, its input sizes, and the block's source
pub fn build_model<T: Task>(
    task: &T,
    cfg: &T::Config,
    shape: T::Shape,
    num_classes: usize,
    mode: BlockMode,
    mlp_hidden: Option<usize>,
    block_up: Option<&Upstream>,
    seed: u64,
    device: &Device,
) -> Result<Built<T::Model>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let mut block = load_block(block_up, mode, mlp_hidden, seed, device)?;
    let block_vars = match block.as_mut() {
        Some((core, mode)) if mode.is_trainable() => trainable_vars(core)?,
        _ => Vec::new(),
    };
    let model = task.build_model(cfg, shape, num_classes, block, vb)?;
    task.init_weights(&varmap, seed)?;
    Ok(Built {
        varmap,
        model,
        block_vars,
    })
}

/// Sets every weight of `built` (encoder and trainable block) from `path`, a trained
/// `model.safetensors`.
pub fn load_weights<M>(built: &Built<M>, path: &std::path::Path, device: &Device) -> Result<()> {
    let weights = candle_core::safetensors::load(path, device)?;
    for (name, var) in sorted_vars(&built.varmap)?
        .iter()
        .chain(built.block_vars.iter())
    {
        let t = weights
            .get(name)
            .with_context(|| format!("{}: lacks `{name}`", path.display()))?;
        var.set(t)?;
    }
    Ok(())
}

pub fn sorted_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?;
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(v)
}

pub fn num_classes(data: &Upstream) -> Result<usize> {
    let n = data
        .manifest
        .meta
        .get("num_classes")
        .and_then(|v| v.as_u64())
        .context("the data artifact does not say its number of classes (meta.num_classes)")?;
    anyhow::ensure!(n > 0, "the data artifact has no labelled samples");
    // A head of more classes than any benchmark has comes from a damaged or hostile record.
    anyhow::ensure!(
        n <= 1_000_000,
        "the data artifact claims {n} classes (meta.num_classes); at most 1000000: rebuild it"
    );
    Ok(n as usize)
}
