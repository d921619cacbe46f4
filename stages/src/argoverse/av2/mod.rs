//! Argoverse 2 motion forecasting: scenario parquet files (`scenario`) and each scenario's
//! own vector map (`map`) → VectorNet polyline tokens with the `av.tokens` contract
//! (`vectorize`), the `av2.tokens` stage (`stage`), and scenarios in the released layout for
//! tests and benches (`synth`).

pub mod map;
pub mod scenario;
pub mod stage;
pub mod synth;
pub mod vectorize;

#[cfg(test)]
mod tests;
