#![no_main]
//! ScanObjectNN raw `.bin` objects.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = lm4ve_fuzz::file("object.bin", data);
    let _ = lm4ve_stages::pointcloud::bin::read_bin_cloud(&p);
});
