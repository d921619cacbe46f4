//! Video: Something-Something-v2 clips → tubelet token shards (PAPER.md §4).
//!
//! SSv2's ~220k VP9 webm clips are decoded once, here, with libavcodec (PAPER.md: decord
//! returns wrong frames on these files, its issue #91, and Python loaders decode again every
//! epoch); the VideoMAE sampling rule picks T frames, swscale resizes and converts only
//! those, and the stage stores them as the tubelets a `Conv3d` patch embedding reads.
//!
//! - [`annotations`]: the release's JSON files (labels.json, train/validation lists);
//! - [`decode`]: libavformat/libavcodec decoding, swscale resize + center crop;
//! - [`sampling`]: which frames (the reference loader's segment rule, test and training views);
//! - [`tubelets`]: the token layout;
//! - [`demo`]: synthetic SSv2-format clips written through libvpx;
//! - [`stage`]: the `ssv2.tokens` stage.

pub mod annotations;
pub mod decode;
pub mod demo;
pub mod frames;
pub mod jpeg;
pub mod sampling;
pub mod stage;
pub mod tubelets;
