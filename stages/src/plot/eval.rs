//! Pictures of an eval's predictions (`pipeline report --plot`): a classification's
//! confusion matrix and a few forecast scenes (history, truth, K modes over the lanes).

use super::{encode_png, ensure_font, err, FAMILY, PALETTE};
use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Class names on the axes up to this many classes (beyond, every n-th index).
const NAMED_CLASSES: usize = 40;
/// Counts written in the cells up to this many classes.
const COUNTED_CLASSES: usize = 20;

/// White → the palette's blue by `f` in [0, 1].
fn shade(f: f64) -> RGBColor {
    let f = f.clamp(0.0, 1.0);
    let c = PALETTE[0];
    let mix = |a: u8| (255.0 + (f64::from(a) - 255.0) * f).round() as u8;
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

/// A confusion matrix as PNG: `counts[true][predicted]`, rows are the true class and columns
/// the prediction, each cell shaded by its share of its row (row-normalised, so rare classes
/// read as well as common ones), counts written in the cells of small matrices. `names`
/// label the classes (indices when empty).
pub fn confusion_png(title: &str, names: &[String], counts: &[Vec<u64>]) -> Result<Vec<u8>> {
    ensure_font()?;
    let c = counts.len().max(1);
    let label = |i: usize| match names.get(i) {
        Some(n) if c <= NAMED_CLASSES => format!("{i} {n}"),
        _ => i.to_string(),
    };
    let longest = (0..c).map(|i| label(i).chars().count()).max().unwrap_or(1);
    let left = (40 + 8 * longest.min(28)) as i32;
    let (top, bottom, right) = (70i32, 70i32, 30i32);
    let cell = ((760 / c) as i32).clamp(2, 60);
    let side = cell * c as i32;
    let (w, h) = ((left + side + right) as u32, (top + side + bottom) as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let centred = Pos::new(HPos::Center, VPos::Center);
        root.draw(&Text::new(
            title.to_string(),
            (w as i32 / 2, 18),
            (FAMILY, 20).into_font().color(&BLACK).pos(centred),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "rows: true class, columns: predicted; shade = share of the row".to_string(),
            (w as i32 / 2, 44),
            (FAMILY, 14).into_font().color(&BLACK).pos(centred),
        ))
        .map_err(err)?;
        let step = c.div_ceil(NAMED_CLASSES);
        for (t, row) in counts.iter().enumerate() {
            let total: u64 = row.iter().sum();
            let y = top + t as i32 * cell;
            for (p, &n) in row.iter().enumerate() {
                let f = n as f64 / total.max(1) as f64;
                let x = left + p as i32 * cell;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    shade(f).filled(),
                ))
                .map_err(err)?;
                if c <= COUNTED_CLASSES && n > 0 {
                    let ink = if f > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        n.to_string(),
                        (x + cell / 2, y + cell / 2),
                        (FAMILY, 13).into_font().color(&ink).pos(centred),
                    ))
                    .map_err(err)?;
                }
            }
            if t % step == 0 {
                root.draw(&Text::new(
                    label(t),
                    (left - 6, y + cell / 2),
                    (FAMILY, 12)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(err)?;
                root.draw(&Text::new(
                    t.to_string(),
                    (left + t as i32 * cell + cell / 2, top + side + 6),
                    (FAMILY, 12)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(err)?;
            }
        }
        root.draw(&Rectangle::new(
            [(left, top), (left + side, top + side)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "true class".to_string(),
            (8, top - 6),
            (FAMILY, 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Bottom)),
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            "predicted class".to_string(),
            (left + side / 2, top + side + 30),
            (FAMILY, 14)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(err)?;
        root.present().map_err(err)?;
    }
    encode_png(&buf, w, h)
}

/// One forecast scene in the agent's frame (metres; the agent heads along +y at the origin).
pub struct Scene {
    pub title: String,
    /// The agent's observed positions, oldest first.
    pub history: Vec<(f64, f64)>,
    pub truth: Option<Vec<(f64, f64)>>,
    /// (probability, positions) per mode, most probable first.
    pub modes: Vec<(f64, Vec<(f64, f64)>)>,
    /// The map's polylines near the agent.
    pub lanes: Vec<Vec<(f64, f64)>>,
}

/// A square window around the agent's history, truth and modes, with a margin.
fn window(s: &Scene) -> (f64, f64, f64) {
    let pts = s
        .history
        .iter()
        .chain(s.truth.iter().flatten())
        .chain(s.modes.iter().flat_map(|m| m.1.iter()));
    let (mut x0, mut x1, mut y0, mut y1) = (0f64, 0f64, 0f64, 0f64);
    for &(x, y) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    let half = ((x1 - x0).max(y1 - y0) / 2.0 * 1.15).max(10.0);
    ((x0 + x1) / 2.0, (y0 + y1) / 2.0, half)
}

/// `pts` without points within `eps` of the previous one kept: plotters draws a wide line
/// through two points on the same pixel as a long spike, so near-repeats are dropped.
fn thin(pts: &[(f64, f64)], eps: f64) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(pts.len());
    for &p in pts {
        match out.last() {
            Some(q) if (p.0 - q.0).hypot(p.1 - q.1) < eps => {}
            _ => out.push(p),
        }
    }
    out
}

/// A wide polyline as separate segments: plotters joins the segments of a wide path with
/// miters, and at a sharp turn (a jittery forecast) a miter is a long spike.
fn segments(pts: &[(f64, f64)], style: ShapeStyle) -> Vec<PathElement<(f64, f64)>> {
    pts.windows(2)
        .map(|w| PathElement::new(vec![w[0], w[1]], style))
        .collect()
}

fn draw_scene<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    s: &Scene,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (cx, cy, half) = window(s);
    // About two pixels of a 500-pixel panel.
    let eps = half / 125.0;
    let mut chart = ChartBuilder::on(area)
        .caption(&s.title, (FAMILY, 15))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(44)
        .build_cartesian_2d(cx - half..cx + half, cy - half..cy + half)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("x (m, agent frame)")
        .y_desc("y (m, agent frame; heading +y)")
        .label_style((FAMILY, 11))
        .axis_desc_style((FAMILY, 12))
        .draw()
        .map_err(err)?;
    let lane = RGBColor(0xBB, 0xBB, 0xBB);
    chart
        .draw_series(
            s.lanes
                .iter()
                .map(|l| PathElement::new(thin(l, eps), lane.stroke_width(1))),
        )
        .map_err(err)?;
    for (k, (p, pts)) in s.modes.iter().enumerate() {
        let c = PALETTE[(k + 1) % PALETTE.len()];
        chart
            .draw_series(segments(&thin(pts, eps), c.stroke_width(2)))
            .map_err(err)?
            .label(format!("mode {k} (p {p:.2})"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        if let Some(&end) = pts.last() {
            chart
                .draw_series(std::iter::once(Circle::new(end, 3, c.filled())))
                .map_err(err)?;
        }
    }
    if let Some(t) = &s.truth {
        chart
            .draw_series(segments(&thin(t, eps), BLACK.stroke_width(3)))
            .map_err(err)?
            .label("truth")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(3)));
    }
    // A colour no mode takes (the modes cycle through PALETTE; with 6 modes the last one
    // would otherwise share the history's colour and look like a second history).
    let hist = RGBColor(0x55, 0x55, 0x55);
    chart
        .draw_series(segments(&thin(&s.history, eps), hist.stroke_width(3)))
        .map_err(err)?
        .label("history")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], hist.stroke_width(3)));
    chart
        .draw_series(s.history.last().map(|&p| Circle::new(p, 4, hist.filled())))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .label_font((FAMILY, 11))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}

/// Up to four scenes side by side (2 × 2) as PNG.
pub fn scenes_png(title: &str, scenes: &[Scene]) -> Result<Vec<u8>> {
    ensure_font()?;
    let (w, h) = (1100u32, 1140u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, (FAMILY, 20)).map_err(err)?;
        for (area, s) in root.split_evenly((2, 2)).iter().zip(scenes) {
            draw_scene(area, s)?;
        }
        root.present().map_err(err)?;
    }
    encode_png(&buf, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_and_scenes_render_deterministically() {
        let counts = vec![vec![5, 1, 0], vec![0, 3, 3], vec![1, 0, 7]];
        let names: Vec<String> = ["chair", "table", "sofa"].map(String::from).to_vec();
        let a = confusion_png("eval_pc", &names, &counts).unwrap();
        assert_eq!(a, confusion_png("eval_pc", &names, &counts).unwrap());
        // 200 classes: no names, no counts, still a picture.
        let big: Vec<Vec<u64>> = (0..200)
            .map(|i| (0..200).map(|j| u64::from(i == j)).collect())
            .collect();
        assert!(confusion_png("big", &[], &big).unwrap().len() > 1000);
        let s = Scene {
            title: "scene 1".into(),
            history: (0..20).map(|i| (0.0, f64::from(i) - 19.0)).collect(),
            truth: Some(
                (1..=30)
                    .map(|i| (0.1 * f64::from(i), f64::from(i)))
                    .collect(),
            ),
            modes: vec![
                (0.7, (1..=30).map(|i| (0.0, f64::from(i))).collect()),
                (
                    0.3,
                    (1..=30)
                        .map(|i| (-0.5 * f64::from(i), f64::from(i)))
                        .collect(),
                ),
            ],
            lanes: vec![
                vec![(-2.0, -40.0), (-2.0, 40.0)],
                vec![(2.0, -40.0), (2.0, 40.0)],
            ],
        };
        let png = scenes_png("eval_av", &[s]).unwrap();
        assert!(png.len() > 1000);
        // To look at them: LM4VE_PLOT_OUT=DIR.
        if let Some(d) = std::env::var_os("LM4VE_PLOT_OUT") {
            let d = std::path::Path::new(&d);
            std::fs::write(d.join("confusion.png"), &a).unwrap();
            std::fs::write(d.join("scenes.png"), &png).unwrap();
        }
    }
}
