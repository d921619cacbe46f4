//! Links Intel MKL (static, LP64, Intel OpenMP threading) into whatever depends on it; no
//! code of its own. See build.rs.
#![no_std]
