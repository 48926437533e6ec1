//! Line plots as PNG files: the loss curve at the end of training, metric-versus-scale charts
//! of an evaluation, and metric-versus-metric charts of a guidance study. Several panels are
//! laid out side by side, sharing one x axis ([`write_panels`]) or each with its own
//! ([`write_xy_panels`]: a line joins its points in their order, whatever their x).

use crate::MonitorError;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One line of a panel.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title, a y-axis label and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Draw each point as a dot as well (for short series such as a sweep over scales).
    pub markers: bool,
}

const PANEL_WIDTH: u32 = 640;
const PANEL_HEIGHT: u32 = 420;
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Plotters draws text only with a registered font; this one is compiled in.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font must parse"));
    });
}

/// Draws `panels` left to right (wrapping after `columns`) against `x_label`, and writes the
/// PNG atomically.
pub fn write_panels(
    path: &Path,
    x_label: &str,
    panels: &[Panel],
    columns: usize,
) -> Result<(), MonitorError> {
    let labelled: Vec<(&str, &Panel)> = panels.iter().map(|p| (x_label, p)).collect();
    draw_panels(path, &labelled, columns)
}

/// Draws panels with an x axis each (`(x label, panel)`), as [`write_panels`] does; for one
/// metric against another, a line per series through its points in order.
pub fn write_xy_panels(
    path: &Path,
    panels: &[(&str, Panel)],
    columns: usize,
) -> Result<(), MonitorError> {
    let labelled: Vec<(&str, &Panel)> = panels.iter().map(|(x, p)| (*x, p)).collect();
    draw_panels(path, &labelled, columns)
}

fn draw_panels(path: &Path, panels: &[(&str, &Panel)], columns: usize) -> Result<(), MonitorError> {
    let draw_err = |e: &dyn std::fmt::Display| MonitorError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    register_font();
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let (width, height) = (PANEL_WIDTH * columns as u32, PANEL_HEIGHT * rows as u32);
    let mut rgb = vec![0u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;
        let areas = root.split_evenly((rows, columns));
        for ((x_label, panel), area) in panels.iter().zip(areas.iter()) {
            draw_panel(area, x_label, panel).map_err(|e| draw_err(&e))?;
        }
        root.present().map_err(|e| draw_err(&e))?;
    }
    let png = encode_rgb_png(&rgb, width, height).map_err(|e| draw_err(&e))?;
    ember_io::write_atomic(path, &png).map_err(|source| MonitorError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The range of `values` with a margin, never empty.
fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let margin = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - margin)..(hi + margin)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    x_label: &str,
    panel: &Panel,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let x_range = padded_range(points().map(|p| p.0));
    let y_range = padded_range(points().map(|p| p.1));
    let legend_at = emptiest_corner(points().copied(), &x_range, &y_range);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .x_label_formatter(&|v| tick_label(*v))
        .y_label_formatter(&|v| tick_label(*v))
        .draw()?;
    for (i, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let finite: Vec<(f64, f64)> = series
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(finite.clone(), colour.stroke_width(2)))?
            .label(&series.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        if panel.markers {
            chart.draw_series(finite.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }
    }
    if panel.series.len() > 1 || panel.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 13))
            .position(legend_at)
            .draw()?;
    }
    Ok(())
}

/// The corner with the fewest points, where the legend hides the least (upper right on ties).
fn emptiest_corner(
    points: impl Iterator<Item = (f64, f64)>,
    x: &std::ops::Range<f64>,
    y: &std::ops::Range<f64>,
) -> SeriesLabelPosition {
    // Upper right, upper left, lower right, lower left; a legend covers about a third of the
    // width and height, so only points in that outer third count.
    let mut counts = [0usize; 4];
    for (px, py) in points.filter(|(a, b)| a.is_finite() && b.is_finite()) {
        let nx = (px - x.start) / (x.end - x.start);
        let ny = (py - y.start) / (y.end - y.start);
        let (right, left, upper, lower) = (nx > 0.6, nx < 0.4, ny > 0.65, ny < 0.35);
        for (i, hit) in [right && upper, left && upper, right && lower, left && lower]
            .into_iter()
            .enumerate()
        {
            counts[i] += hit as usize;
        }
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

/// Axis numbers without float noise: `200`, not `200.0`; `2.0e-3`, not `0.0020000000000000005`.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.4}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn encode_rgb_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Plots are mostly flat colour: the strongest settings shrink them several-fold.
    encoder.set_compression(png::Compression::Best);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panels_render_to_a_png_of_the_expected_size() {
        let path = std::env::temp_dir().join(format!("ember-plot-{}.png", std::process::id()));
        let panel = |title: &str| Panel {
            title: title.into(),
            y_label: "value".into(),
            series: vec![
                Series {
                    name: "a".into(),
                    points: (0..20).map(|i| (i as f64, (i as f64).sqrt())).collect(),
                },
                Series {
                    name: "b".into(),
                    points: vec![(0.0, 1.0), (19.0, f64::NAN), (10.0, 2.0)],
                },
            ],
            markers: true,
        };
        write_panels(
            &path,
            "step",
            &[panel("one"), panel("two"), panel("three")],
            2,
        )
        .unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!(
            (info.width, info.height),
            (2 * PANEL_WIDTH, 2 * PANEL_HEIGHT)
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn xy_panels_have_their_own_axes() {
        let path = std::env::temp_dir().join(format!("ember-xy-{}.png", std::process::id()));
        // A line that turns back in x: drawn in the order of its points.
        let curve = |name: &str, k: f64| Series {
            name: name.into(),
            points: (0..5)
                .map(|i| (1.0 - (i as f64 - 2.0).powi(2) / 8.0, k * i as f64))
                .collect(),
        };
        let panel = |title: &str| Panel {
            title: title.into(),
            y_label: "FD".into(),
            series: (0..8)
                .map(|k| curve(&format!("method {k}"), k as f64))
                .collect(),
            markers: true,
        };
        write_xy_panels(
            &path,
            &[("accuracy", panel("one")), ("recall", panel("two"))],
            2,
        )
        .unwrap();
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let info = decoder.read_info().unwrap().info().clone();
        assert_eq!((info.width, info.height), (2 * PANEL_WIDTH, PANEL_HEIGHT));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        let falling = [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)];
        let at = emptiest_corner(falling.into_iter(), &(0.0..1.0), &(0.0..1.0));
        assert!(matches!(at, SeriesLabelPosition::UpperRight));
        let rising = [(0.0, 0.0), (1.0, 1.0), (0.9, 0.95)];
        let at = emptiest_corner(rising.into_iter(), &(0.0..1.0), &(0.0..1.0));
        assert!(matches!(at, SeriesLabelPosition::UpperLeft));
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(200.0), "200");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(0.002), "2.0e-3");
        assert_eq!(tick_label(1.0 / 3.0), "0.3333");
    }

    #[test]
    fn ranges_ignore_non_finite_values_and_never_collapse() {
        let r = padded_range([1.0, f64::NAN, 3.0].into_iter());
        assert!(r.start < 1.0 && r.end > 3.0);
        let flat = padded_range([2.0, 2.0].into_iter());
        assert!(flat.start < 2.0 && flat.end > 2.0);
        assert_eq!(padded_range(std::iter::empty()), 0.0..1.0);
    }
}
