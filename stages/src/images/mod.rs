//! Images: ImageNet (ImageFolder tree, the reference's tar files, Hugging Face parquet) →
//! shards of evaluation views and training JPEGs (PAPER.md §6, issue 24).
//!
//! - [`turbo`]: libjpeg-turbo (TurboJPEG API) decode and encode;
//! - [`region`]: one rectangle of a JPEG (libjpeg's skip/crop scanlines), for training crops;
//! - [`decode`]: a file → RGB exactly as `PIL.Image.open(f).convert('RGB')`;
//! - [`resize`]: Pillow's bicubic resampling, torchvision's Resize / CenterCrop arithmetic;
//! - [`transpose`]: packed RGB transposed (the resampler's horizontal pass runs on columns);
//! - [`source`]: the three layouts, listed in ImageFolder order;
//! - [`demo`]: a small synthetic ImageNet-layout folder;
//! - [`stage`]: the `image.tokens` stage.

pub mod decode;
pub mod demo;
pub mod region;
pub mod resize;
pub mod source;
pub mod stage;
pub mod transpose;
pub mod turbo;
