//! Figures for the studies, written as PNG and SVG side by side. Text uses the bundled DejaVu Sans (no system fonts
//! are needed).

use std::{path::Path, sync::Once};

use plotters::{
    coord::Shift,
    prelude::*,
    style::{
        register_font,
        text_anchor::{HPos, Pos, VPos},
        FontStyle,
    },
};

use crate::error::{Result, VeneError};

static FONT: Once = Once::new();

pub(super) fn ensure_font() {
    FONT.call_once(|| {
        // The font is compiled in, so registration cannot fail for a missing file.
        let _ = register_font("sans-serif", FontStyle::Normal, include_bytes!("../../assets/DejaVuSans.ttf"));
    });
}

fn plot_error(path: &Path, error: impl std::fmt::Display) -> VeneError {
    VeneError::Config(format!("cannot draw {}: {error}", path.display()))
}

/// A heatmap: `values[row][column]` in `[0, max]` (or `[-max, max]` when some are negative: negative ones are drawn
/// in blue), rows labelled top to bottom, columns left to right, with a colour bar saying what the values measure
/// (`scale_label`).
pub struct Heatmap<'a> {
    pub title: &'a str,
    pub row_labels: &'a [String],
    pub column_label: &'a str,
    pub scale_label: &'a str,
    pub values: &'a [Vec<f64>],
    pub max: f64,
}

/// Width of the colour bar beside a heatmap, its labels included.
const COLOUR_BAR_WIDTH: u32 = 96;

/// A heatmap cell's colour: white at 0, deep red-pink at `max`, deep blue at `-max`.
fn shade_of(value: f64, max: f64) -> RGBColor {
    let shade = (value.abs() / max.max(1e-12)).clamp(0.0, 1.0);
    let (strong, weak) = ((255.0 * (1.0 - 0.8 * shade)) as u8, (255.0 * (1.0 - shade)) as u8);
    if value < 0.0 {
        RGBColor(weak, strong, 255)
    } else {
        RGBColor(255, weak, strong)
    }
}

/// One cell in pixels (`x0, y0, x1, y1`) with the text its SVG tooltip shows.
struct Cell {
    corners: (i32, i32, i32, i32),
    tooltip: String,
}

/// Draws a figure into a hidden file beside `path` (same extension: plotters picks the format by it) and renames it
/// into place, so an interrupted run never leaves a half-written figure where a finished one was.
pub(super) fn write_figure(
    path: &Path,
    draw: impl FnOnce(&Path) -> std::result::Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let staging = path.with_file_name(format!(".{}-{name}", std::process::id()));
    if let Err(error) = draw(&staging) {
        std::fs::remove_file(&staging).ok();
        return Err(plot_error(path, error));
    }
    std::fs::rename(&staging, path).map_err(|source| VeneError::Io { path: path.to_path_buf(), source })
}

/// Writes `stem.png` and `stem.svg` in `dir`; in the SVG every cell carries its value as a tooltip (`<title>`).
pub fn heatmap(dir: &Path, stem: &str, map: &Heatmap<'_>) -> Result<()> {
    ensure_font();
    // Wide enough for the cells and for the title (about 8 pixels per character at 16 px), then the colour bar.
    let cells = 160 + 28 * map.values.first().map_or(1, Vec::len) as u32;
    let width = cells.max(40 + 8 * map.title.chars().count() as u32) + COLOUR_BAR_WIDTH;
    let height = 90 + 24 * map.row_labels.len() as u32;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    write_figure(&png, |to| draw_heatmap(BitMapBackend::new(to, (width, height)).into_drawing_area(), map).map(drop))?;
    write_figure(&svg, |to| {
        let cells = draw_heatmap(SVGBackend::new(to, (width, height)).into_drawing_area(), map)?;
        add_tooltips(to, &cells)
    })
}

fn draw_heatmap<B: DrawingBackend>(
    area: DrawingArea<B, Shift>,
    map: &Heatmap<'_>,
) -> std::result::Result<Vec<Cell>, Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (main, bar) = area.split_horizontally(area.dim_in_pixel().0 - COLOUR_BAR_WIDTH);
    let rows = map.row_labels.len();
    let columns = map.values.first().map_or(0, Vec::len);
    let mut chart = ChartBuilder::on(&main)
        .caption(map.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(120)
        // A segmented range `0..n` holds the n + 1 values 0..=n, so n cells need `0..n - 1`.
        .build_cartesian_2d(
            (0..columns.saturating_sub(1)).into_segmented(),
            (0..rows.saturating_sub(1)).into_segmented(),
        )?;
    let labels = map.row_labels.to_vec();
    let center = |value: &SegmentValue<usize>| match value {
        SegmentValue::CenterOf(v) | SegmentValue::Exact(v) => Some(*v),
        SegmentValue::Last => None,
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(map.column_label)
        .x_labels(columns.min(12))
        .y_labels(rows)
        .x_label_formatter(&|x| center(x).map(|v| v.to_string()).unwrap_or_default())
        .y_label_formatter(&|y| {
            center(y).and_then(|row| labels.get(rows.saturating_sub(row + 1)).cloned()).unwrap_or_default()
        })
        .label_style(("sans-serif", 12))
        .draw()?;
    let corner = |x: usize, y: usize| (SegmentValue::Exact(x), SegmentValue::Exact(y));
    chart.draw_series(map.values.iter().enumerate().flat_map(|(row, line)| {
        let y = rows - 1 - row;
        line.iter().enumerate().map(move |(x, &value)| {
            Rectangle::new([corner(x, y), corner(x + 1, y + 1)], shade_of(value, map.max).filled())
        })
    }))?;
    let mut cells = Vec::new();
    for (row, line) in map.values.iter().enumerate() {
        let y = rows - 1 - row;
        for (x, &value) in line.iter().enumerate() {
            let (x0, y0) = chart.backend_coord(&corner(x, y + 1));
            let (x1, y1) = chart.backend_coord(&corner(x + 1, y));
            let label = map.row_labels.get(row).map_or("", String::as_str);
            let tooltip = format!("{label}, {} {x}: {} {value:.4}", map.column_label, map.scale_label);
            cells.push(Cell { corners: (x0, y0, x1, y1), tooltip });
        }
    }
    draw_colour_bar(&bar, map)?;
    area.present()?;
    Ok(cells)
}

/// The scale beside a heatmap: the colours from 0 to `max`, with ticks and what the values measure.
fn draw_colour_bar<B: DrawingBackend>(
    area: &DrawingArea<B, Shift>,
    map: &Heatmap<'_>,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    let max = map.max.max(1e-12);
    let diverging = map.values.iter().flatten().any(|&v| v < 0.0);
    let low_end = if diverging { -max } else { 0.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(32)
        .margin_bottom(40)
        .margin_right(8)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..1.0, low_end..max)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(5)
        .y_desc(map.scale_label)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(("sans-serif", 11))
        .draw()?;
    let steps = 48;
    let span = max - low_end;
    chart.draw_series((0..steps).map(|i| {
        let (low, high) = (low_end + span * i as f64 / steps as f64, low_end + span * (i + 1) as f64 / steps as f64);
        Rectangle::new([(0.0, low), (1.0, high)], shade_of((low + high) / 2.0, max).filled())
    }))?;
    Ok(())
}

/// Appends to the SVG at `path` a transparent rectangle over every cell whose `<title>` is its tooltip.
fn add_tooltips(path: &Path, cells: &[Cell]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let svg = std::fs::read_to_string(path)?;
    let end = svg.rfind("</svg>").ok_or("the SVG backend wrote no closing tag")?;
    let mut overlay = String::from("<g class=\"cell-values\">\n");
    for Cell { corners: (x0, y0, x1, y1), tooltip } in cells {
        overlay.push_str(&format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" fill=\"transparent\"><title>{}</title></rect>\n",
            x1 - x0,
            y1 - y0,
            escape_xml(tooltip)
        ));
    }
    overlay.push_str("</g>\n");
    std::fs::write(path, format!("{}{overlay}{}", &svg[..end], &svg[end..]))?;
    Ok(())
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Width of the legend column beside a line chart: the longest series name at about 6 pixels per character, plus
/// the line sample.
fn legend_width(series: &[(String, Vec<f64>)]) -> u32 {
    40 + 6 * series.iter().map(|(name, _)| name.chars().count()).max().unwrap_or(0) as u32
}

/// A line chart of several named series over the same x values, its legend in a column of its own beside the plot
/// (never over the data); writes `stem.png` and `stem.svg`.
pub fn lines(dir: &Path, stem: &str, title: &str, x_label: &str, series: &[(String, Vec<f64>)]) -> Result<()> {
    ensure_font();
    let size = (640 + legend_width(series), 400);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    write_figure(&png, |to| draw_lines(BitMapBackend::new(to, size).into_drawing_area(), title, x_label, series))?;
    write_figure(&svg, |to| draw_lines(SVGBackend::new(to, size).into_drawing_area(), title, x_label, series))
}

fn draw_lines<B: DrawingBackend>(
    area: DrawingArea<B, Shift>,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<f64>)],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let (plot, legend) = area.split_horizontally(area.dim_in_pixel().0 - legend_width(series));
    let length = series.iter().map(|(_, v)| v.len()).max().unwrap_or(1).max(2);
    let (low, high) = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if low.is_finite() && high > low { (low, high) } else { (0.0, 1.0) };
    let mut chart = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..(length - 1) as f64, low..high)?;
    let decimals = tick_decimals(high - low);
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_labels(length.min(11))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_label_formatter(&|y| tick(*y, decimals))
        .label_style(("sans-serif", 12))
        .draw()?;
    for (index, (_, values)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        chart.draw_series(LineSeries::new(
            values.iter().enumerate().map(|(x, &y)| (x as f64, y)),
            color.stroke_width(2),
        ))?;
    }
    for (index, (name, _)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let y = 44 + 20 * index as i32;
        legend.draw(&PathElement::new(vec![(4, y), (24, y)], color.stroke_width(2)))?;
        legend.draw(&Text::new(name.as_str(), (30, y - 7), ("sans-serif", 12)))?;
    }
    area.present()?;
    Ok(())
}

/// Decimals that tell apart the ticks of an axis spanning `span` (about ten ticks, so about `span / 10` apart).
fn tick_decimals(span: f64) -> usize {
    let step = span / 10.0;
    if !step.is_finite() || step <= 0.0 || step >= 1.0 {
        return 0;
    }
    ((-step.log10()).ceil() as usize).min(8)
}

/// A tick label with `decimals` decimals; a value that rounds to zero is written without a minus sign.
pub fn tick(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    match text.strip_prefix('-') {
        Some(unsigned) if unsigned.chars().all(|c| c == '0' || c == '.') => unsigned.to_string(),
        _ => text,
    }
}

/// `points` `(x, y)` joined and marked, against `x` on a log scale — `log10(1 + x)`, so that 0 has a place (an empty
/// circuit) — ticked at 0 and the powers of ten; writes `stem.png` and `stem.svg`.
pub fn curve(
    dir: &Path,
    stem: &str,
    title: &str,
    (x_label, y_label): (&str, &str),
    points: &[(f64, f64)],
) -> Result<()> {
    ensure_font();
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    let axes = (x_label, y_label);
    write_figure(&png, |to| draw_curve(BitMapBackend::new(to, (640, 400)).into_drawing_area(), title, axes, points))?;
    write_figure(&svg, |to| draw_curve(SVGBackend::new(to, (640, 400)).into_drawing_area(), title, axes, points))
}

fn draw_curve<B: DrawingBackend>(
    area: DrawingArea<B, Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    points: &[(f64, f64)],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let at = |x: f64| (1.0 + x.max(0.0)).log10();
    let right = points.iter().map(|p| at(p.0)).fold(1.0, f64::max);
    let (low, high) = points.iter().fold((0.0f64, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let pad = 0.05 * (high - low);
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..right, (low - pad)..(high + pad))?;
    let decimals = tick_decimals(high - low);
    chart
        .configure_mesh()
        .x_labels(0)
        .y_desc(y_label)
        .y_label_formatter(&|y| tick(*y, decimals))
        .label_style(("sans-serif", 12))
        .draw()?;
    let ticks: Vec<f64> =
        std::iter::once(0.0).chain((0..8).map(|p| 10f64.powi(p)).take_while(|&n| at(n) <= right + 1e-9)).collect();
    for &n in &ticks {
        chart.draw_series(LineSeries::new([(at(n), low - pad), (at(n), high + pad)], RGBColor(225, 225, 225)))?;
        let (x, y) = chart.backend_coord(&(at(n), low - pad));
        let centred = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(format!("{n}"), (x, y + 6), centred))?;
    }
    let (x, y) = chart.backend_coord(&(right / 2.0, low - pad));
    let centred = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(x_label, (x, y + 22), centred))?;
    let colour = Palette99::pick(0).to_rgba();
    chart.draw_series(LineSeries::new(points.iter().map(|p| (at(p.0), p.1)), colour.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|p| Circle::new((at(p.0), p.1), 3, colour.filled())))?;
    area.present()?;
    Ok(())
}

/// Horizontal bars of `(label, value)` in `[0, max]`, top to bottom; writes `stem.png` and `stem.svg`.
pub fn bars(dir: &Path, stem: &str, title: &str, bars: &[(String, f64)], max: f64) -> Result<()> {
    ensure_font();
    let height = 80 + 28 * bars.len() as u32;
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    write_figure(&png, |to| draw_bars(BitMapBackend::new(to, (520, height)).into_drawing_area(), title, bars, max))?;
    write_figure(&svg, |to| draw_bars(SVGBackend::new(to, (520, height)).into_drawing_area(), title, bars, max))
}

fn draw_bars<B: DrawingBackend>(
    area: DrawingArea<B, Shift>,
    title: &str,
    bars: &[(String, f64)],
    max: f64,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    B::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let rows = bars.len().max(1);
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(110)
        .build_cartesian_2d(0f64..max.max(1e-9), (0..rows.saturating_sub(1)).into_segmented())?;
    let labels: Vec<String> = bars.iter().map(|(l, _)| l.clone()).collect();
    chart
        .configure_mesh()
        .disable_mesh()
        .y_labels(rows)
        .y_label_formatter(&|y| match y {
            SegmentValue::CenterOf(v) | SegmentValue::Exact(v) => labels.get(rows - 1 - v).cloned().unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .label_style(("sans-serif", 12))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, value))| {
        let y = rows - 1 - i;
        Rectangle::new(
            [(0.0, SegmentValue::Exact(y)), (*value, SegmentValue::Exact(y + 1))],
            RGBColor(220, 40, 80).filled(),
        )
    }))?;
    area.present()?;
    Ok(())
}
