//! Pictures a person can read, drawn with `plotters` and an embedded DejaVu Sans (ab_glyph),
//! so they render the same on a machine with no fonts installed: training curves (the
//! `curves.png` of a `train` artifact) and bar charts with error bars (`pipeline report
//! --plot`). PNG bytes come from the `png` crate over plotters' RGB buffer: the same inputs
//! give the same bytes on every machine.

pub mod eval;

use anyhow::{anyhow, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// One colour per series, distinguishable in print and for common colour blindness (Tol's
/// bright scheme).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0x44, 0x77, 0xAA),
    RGBColor(0xEE, 0x66, 0x77),
    RGBColor(0x22, 0x88, 0x33),
    RGBColor(0xCC, 0xBB, 0x44),
    RGBColor(0x66, 0xCC, 0xEE),
    RGBColor(0xAA, 0x33, 0x77),
];

fn ensure_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the embedded plot font could not be loaded"))
    }
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e:?}")
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header()?;
        wr.write_image_data(rgb)?;
    }
    Ok(out)
}

/// A named line: its points (x, y).
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Dashed look (drawn with markers) for held-out series, solid for training ones.
    pub held_out: bool,
}

fn range(values: impl Iterator<Item = f64>, pad_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if pad_zero {
        lo = lo.min(0.0);
    }
    if hi - lo < 1e-9 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    (lo - if pad_zero { 0.0 } else { pad }, hi + pad)
}

/// Training curves: the loss on the left axis, fractions in [0, 1] (accuracy, held-out score)
/// on the right one; x = epoch.
pub fn curves_png(title: &str, loss: &Series, fractions: &[Series]) -> Result<Vec<u8>> {
    curves_png_axes(
        title,
        "training loss",
        std::slice::from_ref(loss),
        "fraction (accuracy / held-out score)",
        fractions,
    )
}

/// Curves over epochs: `left` series on a left axis fitted to them (from 0), `fractions` in
/// [0, 1] on the right one.
pub fn curves_png_axes(
    title: &str,
    left_desc: &str,
    left: &[Series],
    right_desc: &str,
    fractions: &[Series],
) -> Result<Vec<u8>> {
    ensure_font()?;
    let (w, h) = (900u32, 520u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        // x spans the epochs there are (from the first, not from 0).
        let (xmin, xmax) = range(
            left.iter()
                .chain(fractions)
                .flat_map(|s| s.points.iter())
                .map(|p| p.0),
            false,
        );
        let (ylo, yhi) = range(left.iter().flat_map(|s| s.points.iter()).map(|p| p.1), true);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .right_y_label_area_size(64)
            .build_cartesian_2d(xmin..xmax, ylo..yhi)
            .map_err(err)?
            .set_secondary_coord(xmin..xmax, 0f64..1.0f64);
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(left_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc(right_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(err)?;
        for (i, s) in left.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name)
                .legend(legend_line(c));
            if s.held_out {
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?;
            }
        }
        for (i, s) in fractions.iter().enumerate() {
            let c = PALETTE[(i + left.len()) % PALETTE.len()];
            chart
                .draw_secondary_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name)
                .legend(legend_line(c));
            if s.held_out {
                // Held-out points get markers, so they read apart from training lines.
                chart
                    .draw_secondary_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    encode_png(&buf, w, h)
}

/// The legend entry of a line series: a short line in its colour.
fn legend_line(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
}

/// Lines on one axis (e.g. each group's held-out score per epoch), y scaled to the data.
pub fn lines_png(title: &str, x_desc: &str, y_desc: &str, series: &[Series]) -> Result<Vec<u8>> {
    ensure_font()?;
    let (w, h) = (900u32, 520u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let pts = || series.iter().flat_map(|s| s.points.iter());
        let (xlo, xhi) = range(pts().map(|p| p.0), false);
        let (ylo, yhi) = range(pts().map(|p| p.1), false);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .draw()
            .map_err(err)?;
        for (i, s) in series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(s.name)
                .legend(legend_line(c));
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    encode_png(&buf, w, h)
}

/// One bar with an error bar: a group's mean ± std over n runs.
pub struct Bar {
    pub label: String,
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

fn draw_bars<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    bars: &[Bar],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let (ylo, yhi) = range(
        bars.iter().flat_map(|b| [b.mean - b.std, b.mean + b.std]),
        true,
    );
    let n = bars.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(60)
        .y_label_area_size(70)
        .build_cartesian_2d((0..(n - 1).max(0)).into_segmented(), ylo..yhi)
        .map_err(err)?;
    let labels: Vec<String> = bars
        .iter()
        .map(|b| format!("{} (n={})", b.label, b.n))
        .collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len().max(1))
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("variant (mean ± std over runs)")
        .y_desc(y_label)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 15))
        .draw()
        .map_err(err)?;
    for (i, b) in bars.iter().enumerate() {
        let i = i as i32;
        let c = PALETTE[i as usize % PALETTE.len()];
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0f64.max(ylo)),
                (SegmentValue::Exact(i + 1), b.mean),
            ],
            c.mix(0.8).filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        chart.draw_series(std::iter::once(bar)).map_err(err)?;
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                SegmentValue::CenterOf(i),
                b.mean - b.std,
                b.mean,
                b.mean + b.std,
                BLACK.stroke_width(2),
                12,
            )))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// A bar chart with error bars as PNG bytes and as SVG text.
pub fn bars(title: &str, y_label: &str, bars: &[Bar]) -> Result<(Vec<u8>, String)> {
    ensure_font()?;
    let w = (240 + 140 * bars.len() as u32).max(640);
    let h = 480u32;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    draw_bars(
        BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area(),
        title,
        y_label,
        bars,
    )?;
    let png = encode_png(&buf, w, h)?;
    let mut svg = String::new();
    draw_bars(
        SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(),
        title,
        y_label,
        bars,
    )?;
    Ok((png, svg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        (info.width, info.height, buf)
    }

    #[test]
    fn curves_draw_text_lines_and_are_deterministic() {
        let loss = Series {
            name: "training loss",
            points: (1..=10).map(|e| (e as f64, 2.0 / e as f64)).collect(),
            held_out: false,
        };
        let acc = [Series {
            name: "held-out score",
            points: (1..=10).map(|e| (e as f64, e as f64 / 12.0)).collect(),
            held_out: true,
        }];
        let a = curves_png("train_pc", &loss, &acc).unwrap();
        let b = curves_png("train_pc", &loss, &acc).unwrap();
        assert_eq!(a, b, "same inputs, same bytes");
        let (w, h, px) = decode(&a);
        assert_eq!((w, h), (900, 520));
        // Text and lines: many non-white pixels, and the series colours appear.
        let dark = px.chunks(3).filter(|p| p.iter().all(|&c| c < 80)).count();
        assert!(dark > 2000, "too little ink: {dark}");
        let has = |c: RGBColor| px.chunks(3).any(|p| p == [c.0, c.1, c.2]);
        assert!(has(PALETTE[0]) && has(PALETTE[1]));
    }

    #[test]
    fn bars_render_png_and_svg_with_labels() {
        let b = [
            Bar {
                label: "frozen".into(),
                mean: 0.8,
                std: 0.02,
                n: 3,
            },
            Bar {
                label: "none".into(),
                mean: 0.7,
                std: 0.05,
                n: 3,
            },
        ];
        let (png, svg) = bars("overall_accuracy", "overall_accuracy", &b).unwrap();
        let (w, _, _) = decode(&png);
        assert!(w >= 640);
        assert!(
            svg.contains("frozen (n=3)") && svg.contains("<svg"),
            "{}",
            &svg[..200.min(svg.len())]
        );
    }
}
