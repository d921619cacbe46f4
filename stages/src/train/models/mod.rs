//! The encoders of the paper's three tasks, candle-style (plain structs of named layers, a
//! `new(cfg, vb)` that creates or loads them by name, one `forward`), and the layers they
//! share. May depend on `train::block` and `train::ops`, never on the pipeline engine or the
//! data sets.

pub mod image_vit;
pub mod layers;
pub mod pointbert;
pub mod vectornet;
pub mod video_vit;
