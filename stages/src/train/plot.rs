//! A PNG of the training curves (loss, train and test accuracy per epoch), drawn with the
//! `png` crate alone: no fonts or system libraries, so it works on any machine.

use anyhow::Result;

const W: usize = 720;
const H: usize = 320;

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas {
            px: vec![255; W * H * 3],
        }
    }
    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3]) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
        for s in 0..=steps {
            let x = x0 + (x1 - x0) * s / steps;
            let y = y0 + (y1 - y0) * s / steps;
            for d in 0..2 {
                self.set(x, y + d, c);
            }
        }
    }
    fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]) {
        self.line((x0, y0), (x1, y0), c);
        self.line((x0, y1), (x1, y1), c);
        self.line((x0, y0), (x0, y1), c);
        self.line((x1, y0), (x1, y1), c);
    }
}

/// Two panels: left the training loss (blue), right train (orange) and test (green)
/// accuracy on [0, 1], with light grid lines at quarters. x = epoch.
pub fn curves_png(loss: &[f64], train_acc: &[f64], test_acc: &[f64]) -> Result<Vec<u8>> {
    let mut cv = Canvas::new();
    let panels = [(20i64, 20i64, 350i64, 300i64), (370, 20, 700, 300)];
    for &(x0, y0, x1, y1) in &panels {
        for q in 1..4 {
            let y = y0 + (y1 - y0) * q / 4;
            cv.line((x0, y), (x1, y), [225, 225, 225]);
        }
        cv.rect(x0, y0, x1, y1, [0, 0, 0]);
    }
    let max_loss = loss.iter().cloned().fold(0.0f64, f64::max).max(1e-9);
    let plot =
        |cv: &mut Canvas, vals: &[f64], (x0, y0, x1, y1): (i64, i64, i64, i64), top: f64, c| {
            let n = vals.len();
            let pt = |i: usize, v: f64| {
                let x = if n <= 1 {
                    x0
                } else {
                    x0 + (x1 - x0) * i as i64 / (n as i64 - 1)
                };
                let y = y1 - ((v / top).clamp(0.0, 1.0) * (y1 - y0) as f64) as i64;
                (x, y)
            };
            for i in 1..n {
                cv.line(pt(i - 1, vals[i - 1]), pt(i, vals[i]), c);
            }
            if n == 1 {
                let (x, y) = pt(0, vals[0]);
                cv.line((x - 2, y), (x + 2, y), c);
            }
        };
    plot(&mut cv, loss, panels[0], max_loss, [31, 119, 180]);
    plot(&mut cv, train_acc, panels[1], 1.0, [255, 127, 14]);
    plot(&mut cv, test_acc, panels[1], 1.0, [44, 160, 44]);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&cv.px)?;
    }
    Ok(out)
}
