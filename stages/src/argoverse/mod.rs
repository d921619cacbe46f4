//! Argoverse 1.1 motion forecasting (PAPER.md §5): scenario CSVs and city vector maps →
//! VectorNet polyline tokens. Readers (`csv`, `map`), the per-city lane R-tree (`index`),
//! the vectorization contract (`vectorize`), a sample's bytes (`encode`), the synthetic demo data (`demo`) and the
//! `av.tokens` stage (`stage`); Argoverse 2 (`av2`, the `av2.tokens` stage) beside them, and
//! the challenges' submission files of both (`submit`).

pub mod av2;
pub mod csv;
pub mod demo;
pub mod encode;
pub mod frame;
pub mod index;
pub mod map;
pub mod stage;
pub mod submit;
pub mod vectorize;

#[cfg(test)]
mod tests;
