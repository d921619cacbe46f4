#![no_main]
//! LAS point clouds (the `las` reader of `pc.tokens`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = lm4ve_fuzz::file("cloud.las", data);
    let _ = lm4ve_stages::pointcloud::las::read_las_cloud(&p);
});
