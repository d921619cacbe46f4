//! Point clouds: readers (ScanObjectNN h5 and .bin, LAS/LAZ), sampling and grouping
//! (PointBERT tokens), per-step resampled views, the synthetic demo dataset, and the
//! `pc.tokens` stage.

pub mod bin;
pub mod demo;
mod fps;
mod fps_avx2;
pub mod geometry;
pub mod h5;
mod knn;
pub mod las;
pub mod resample;
pub mod stage;
