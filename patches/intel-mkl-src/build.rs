//! Links the static MKL libraries and Intel's OpenMP runtime from `$MKLROOT/lib`, the layout of
//! the PyPI wheels (mkl-static, intel-openmp) that scripts/install-mkl.sh installs. Static
//! libiomp5 too, so the binary runs without a library path.

use std::path::PathBuf;

const LIBS: [&str; 4] = ["mkl_intel_lp64", "mkl_intel_thread", "mkl_core", "iomp5"];

fn main() {
    println!("cargo:rerun-if-env-changed=MKLROOT");
    let Some(root) = std::env::var_os("MKLROOT") else {
        fail("MKLROOT is not set: run `eval \"$(bash scripts/install-mkl.sh)\"` first (the Makefile does), or build without `--features mkl`");
    };
    let lib = PathBuf::from(root).join("lib");
    for name in LIBS {
        let file = lib.join(format!("lib{name}.a"));
        if !file.is_file() {
            fail(&format!(
                "{} is missing: MKLROOT must be a prefix that scripts/install-mkl.sh filled (re-run it), or build without `--features mkl`",
                file.display()
            ));
        }
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rustc-link-search=native={}", lib.display());
    for name in LIBS {
        println!("cargo:rustc-link-lib=static={name}");
    }
}

fn fail(message: &str) -> ! {
    eprintln!("intel-mkl-src (lm4ve's MKL link shim): {message}");
    std::process::exit(1);
}
