//! Compiles `src/images/jpeg_region.c` (libjpeg's region decode needs setjmp/longjmp for its
//! errors, which only C can do) and links libjpeg-turbo's libjpeg (Debian's
//! `libjpeg62-turbo-dev`, the package that ships `jpeglib.h`).
fn main() {
    println!("cargo:rerun-if-changed=src/images/jpeg_region.c");
    cc::Build::new()
        .file("src/images/jpeg_region.c")
        .opt_level(2)
        .warnings(true)
        .compile("lm4ve_jpeg_region");
    println!("cargo:rustc-link-lib=jpeg");
}
