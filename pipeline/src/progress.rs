//! Progress bars on long loops: drawn on stderr when it is a terminal, hidden with
//! `--quiet` or when output goes to a file or a CI log (which get plain log lines instead).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::OnceLock;

/// Every bar of the process draws through one `MultiProgress`, so that the bars of stages
/// building side by side (`--concurrent-stages`) stack instead of overwriting each other.
fn shared_draw() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    pub fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.enabled {
            return ProgressBar::hidden();
        }
        let bar = shared_draw().add(ProgressBar::new(len));
        if let Ok(style) =
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.to_string());
        bar
    }

    /// A bar counting bytes (transfers to and from a remote cache).
    pub fn bytes_bar(&self, len: u64, msg: &str) -> ProgressBar {
        if !self.enabled || len == 0 {
            return ProgressBar::hidden();
        }
        let bar = shared_draw().add(ProgressBar::new(len));
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(msg.to_string());
        bar
    }
}
