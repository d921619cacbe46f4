//! The encoders of the paper's three tasks, candle-style (plain structs of named layers, a
//! `new(cfg, vb)` that creates or loads them by name, one `forward`), and the layers they
//! share. May depend on `train::block` and `train::ops`, never on the pipeline engine or the
//! data sets. `init_rules.rs`: how each encoder's weights start, by its reference's rules.

pub mod image_vit;
pub mod init_rules;
pub mod layers;
pub mod pointbert;
pub mod vectornet;
pub mod video_vit;
