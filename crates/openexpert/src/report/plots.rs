//! SVG plots for reports: labelled scatter, bars with error whiskers, line charts and heatmaps.
//!
//! Every function returns a complete SVG document (`<svg ...>...</svg>`) as a `String`; the caller
//! writes it. Drawing goes through plotters' SVG backend without fonts: text is emitted as SVG
//! `<text>` (escaped by the backend) and sized by the viewer, so label widths here are estimates
//! (about 7 px per character at 12 px).
//!
//! Non-finite values are never drawn: scatter and line points with a NaN or infinite coordinate
//! are skipped and counted in a caption, bars with a non-finite value are marked `n/a`, heatmap
//! cells are drawn grey. Data with nothing finite left is a [`ReportError::BadData`].

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use super::{ReportError, Result};

/// One point of a [`scatter_svg`], labelled with its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Text drawn next to the point.
    pub label: String,
    /// Horizontal coordinate (data units).
    pub x: f64,
    /// Vertical coordinate (data units).
    pub y: f64,
    /// Draw bigger, in the highlight colour, under the legend entry "chosen".
    pub highlight: bool,
}

/// One bar of a [`bars_svg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bar {
    /// Text under the bar (shortened to 24 characters, rotated when bars are narrow).
    pub label: String,
    /// Height of the bar (data units); printed above it.
    pub value: f64,
    /// Standard error, drawn as a ±stderr whisker; `None` or non-finite draws none.
    pub stderr: Option<f64>,
    /// Draw in the highlight colour, under the legend entry "chosen".
    pub highlight: bool,
}

/// One named line of a [`lines_svg`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points, joined in the given order.
    pub points: Vec<(f64, f64)>,
}

/// tab10: distinct colours for the first ten series.
const PALETTE: [RGBColor; 10] = [
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
const NORMAL: RGBColor = PALETTE[0];
const CHOSEN: RGBColor = PALETTE[3];
const FONT: &str = "sans-serif";
/// Estimated width of one character at font size 12, in pixels (generous: text must not clip).
const CHAR_PX: u32 = 7;
/// The same for rotated labels, where an over-estimate only leaves white space.
const ROTATED_CHAR_PX: u32 = 6;
/// Longest label drawn in full; longer ones end in "…".
const MAX_LABEL_CHARS: usize = 24;

/// A labelled scatter plot.
///
/// `points` in data units; points with a non-finite coordinate are skipped and the number skipped
/// is given in a caption under the plot. Highlighted points are drawn bigger, in red, with the
/// legend entry "chosen".
///
/// # Errors
/// [`ReportError::BadData`] when `points` is empty or no point is finite;
/// [`ReportError::Plot`] when the backend fails.
pub fn scatter_svg(title: &str, x_label: &str, y_label: &str, points: &[Point]) -> Result<String> {
    if points.is_empty() {
        return Err(bad(title, "no points"));
    }
    let finite: Vec<&Point> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    let skipped = points.len() - finite.len();
    if finite.is_empty() {
        return Err(bad(
            title,
            format!("all {} points have a non-finite coordinate", points.len()),
        ));
    }
    let (x0, x1) = padded(finite.iter().map(|p| p.x), 0.08, 0.2);
    let (y0, y1) = padded(finite.iter().map(|p| p.y), 0.08, 0.08);
    let (width, height) = (800u32, 560u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let err = draw_err(title);
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = xy_chart(&root, title, skipped > 0, (x0, x1), (y0, y1))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()
            .map_err(&err)?;
        chart
            .draw_series(finite.iter().filter(|p| !p.highlight).map(|p| {
                EmptyElement::at((p.x, p.y))
                    + Circle::new((0, 0), 4, NORMAL.filled())
                    + Text::new(p.label.clone(), (6, -14), (FONT, 12))
            }))
            .map_err(&err)?;
        if finite.iter().any(|p| p.highlight) {
            chart
                .draw_series(finite.iter().filter(|p| p.highlight).map(|p| {
                    EmptyElement::at((p.x, p.y))
                        + Circle::new((0, 0), 7, CHOSEN.filled())
                        + Text::new(
                            p.label.clone(),
                            (9, -16),
                            (FONT, 13).into_font().style(FontStyle::Bold),
                        )
                }))
                .map_err(&err)?
                .label("chosen")
                .legend(|(x, y)| Circle::new((x + 10, y), 6, CHOSEN.filled()));
            draw_legend(
                &mut chart,
                finite.iter().map(|p| (p.x, p.y)),
                (x0, x1),
                (y0, y1),
                title,
            )?;
        }
        skipped_footer(&root, height, skipped, title)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Vertical bars from 0 with ±stderr whiskers, the value printed above each bar (without
/// decimals when every value is a whole number, as counts are).
///
/// Labels go under the bars, shortened to 24 characters and rotated a quarter turn when they do
/// not fit a bar's width. The y axis starts at 0 (or below, for negative values). A bar with a
/// non-finite value is drawn as `n/a`; a non-finite or missing stderr draws no whisker.
///
/// # Errors
/// [`ReportError::BadData`] when `bars` is empty or every value is non-finite;
/// [`ReportError::Plot`] when the backend fails.
pub fn bars_svg(title: &str, y_label: &str, bars: &[Bar]) -> Result<String> {
    if bars.is_empty() {
        return Err(bad(title, "no bars"));
    }
    if bars.iter().all(|b| !b.value.is_finite()) {
        return Err(bad(
            title,
            format!("all {} bar values are non-finite", bars.len()),
        ));
    }
    let se = |b: &Bar| b.stderr.filter(|s| s.is_finite()).map(f64::abs);
    let finite = bars.iter().filter(|b| b.value.is_finite());
    let top = finite
        .clone()
        .map(|b| b.value + se(b).unwrap_or(0.0))
        .fold(0.0, f64::max);
    // The axis starts at 0: whiskers of positive bars are cut there; only negative bars extend it.
    let bottom = finite
        .filter(|b| b.value < 0.0)
        .map(|b| b.value - se(b).unwrap_or(0.0))
        .fold(0.0, f64::min);
    let legend = bars.iter().any(|b| b.highlight && b.value.is_finite());
    let (lo, hi) = if top - bottom <= 0.0 {
        (0.0, 1.0)
    } else {
        // Room above the bars for the printed values (and the legend box).
        let span = top - bottom;
        let room = if legend { 0.3 } else { 0.15 };
        let lo = if bottom < 0.0 {
            bottom - 0.08 * span
        } else {
            0.0
        };
        (lo, if top > 0.0 { top + room * span } else { 0.0 })
    };
    // Counts (every value a whole number below 10^7) print without decimals.
    let counts = bars
        .iter()
        .filter(|b| b.value.is_finite())
        .all(|b| b.value.fract() == 0.0 && b.value.abs() < 1e7);
    let n = bars.len();
    let labels: Vec<String> = bars
        .iter()
        .map(|b| shorten(&b.label, MAX_LABEL_CHARS))
        .collect();
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let bar_px = 64u32;
    let rotate = longest * CHAR_PX > bar_px - 6;
    let label_area = if rotate {
        longest * ROTATED_CHAR_PX + 16
    } else {
        28
    };
    let (width, height) = ((n as u32 * bar_px + 110).max(420), 440 + label_area);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let err = draw_err(title);
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(15)
            .x_label_area_size(label_area)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..n as f64, lo..hi)
            .map_err(&err)?;
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .y_desc(y_label);
        if counts {
            mesh.y_label_formatter(&integer_ticks);
        }
        mesh.draw().map_err(&err)?;
        let rect = |i: usize, b: &Bar, colour: RGBColor| {
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, b.value)],
                colour.filled(),
            )
        };
        let drawn = |h: bool| {
            bars.iter()
                .enumerate()
                .filter(move |(_, b)| b.highlight == h && b.value.is_finite())
        };
        chart
            .draw_series(drawn(false).map(|(i, b)| rect(i, b, NORMAL)))
            .map_err(&err)?;
        if legend {
            chart
                .draw_series(drawn(true).map(|(i, b)| rect(i, b, CHOSEN)))
                .map_err(&err)?
                .label("chosen")
                .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], CHOSEN.filled()));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 13))
                .draw()
                .map_err(&err)?;
        }
        for (i, b) in bars.iter().enumerate() {
            let c = i as f64 + 0.5;
            let above =
                TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            if !b.value.is_finite() {
                chart
                    .draw_series(std::iter::once(Text::new(
                        "n/a".to_string(),
                        (c, 0.0),
                        above,
                    )))
                    .map_err(&err)?;
                continue;
            }
            let whisker = se(b).unwrap_or(0.0);
            if whisker > 0.0 {
                let (lo_w, hi_w) = ((b.value - whisker).max(lo), b.value + whisker);
                let black = BLACK.stroke_width(1);
                chart
                    .draw_series([
                        PathElement::new(vec![(c, lo_w), (c, hi_w)], black),
                        PathElement::new(vec![(c - 0.1, hi_w), (c + 0.1, hi_w)], black),
                        PathElement::new(vec![(c - 0.1, lo_w), (c + 0.1, lo_w)], black),
                    ])
                    .map_err(&err)?;
            }
            let y = (b.value + whisker).max(0.0);
            let value = if counts {
                format!("{:.0}", b.value)
            } else {
                number(b.value)
            };
            chart
                .draw_series(std::iter::once(Text::new(value, (c, y), above)))
                .map_err(&err)?;
        }
        // Labels on the root area, in pixels, so rotated text is not clipped by the plot area.
        for (i, label) in labels.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo));
            let style = TextStyle::from((FONT, 12).into_font());
            let text = if rotate {
                Text::new(
                    label.clone(),
                    (px + 5, py + 6),
                    style.transform(FontTransform::Rotate90),
                )
            } else {
                Text::new(
                    label.clone(),
                    (px, py + 6),
                    style.pos(Pos::new(HPos::Center, VPos::Top)),
                )
            };
            root.draw(&text).map_err(&err)?;
        }
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// A line chart of several series, each with point markers, a distinct colour and a legend entry.
///
/// Points with a non-finite coordinate are skipped and counted in a caption under the plot.
///
/// # Errors
/// [`ReportError::BadData`] when `series` is empty or holds no finite point;
/// [`ReportError::Plot`] when the backend fails.
pub fn lines_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<String> {
    if series.is_empty() {
        return Err(bad(title, "no series"));
    }
    let cleaned: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect()
        })
        .collect();
    let total: usize = series.iter().map(|s| s.points.len()).sum();
    let kept: usize = cleaned.iter().map(Vec::len).sum();
    if kept == 0 {
        return Err(bad(
            title,
            format!(
                "no finite point in {} series ({total} points in all)",
                series.len()
            ),
        ));
    }
    let skipped = total - kept;
    let all = cleaned.iter().flatten();
    let (x0, x1) = padded(all.clone().map(|p| p.0), 0.05, 0.05);
    let (y0, y1) = padded(all.map(|p| p.1), 0.08, 0.08);
    let (width, height) = (800u32, 520u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let err = draw_err(title);
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = xy_chart(&root, title, skipped > 0, (x0, x1), (y0, y1))?;
        // Integer x values (items, rounds, steps) get integer tick labels only.
        let integer_x = cleaned.iter().flatten().all(|p| p.0.fract() == 0.0);
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_label).y_desc(y_label);
        if integer_x {
            mesh.x_label_formatter(&integer_ticks);
        }
        mesh.draw().map_err(&err)?;
        let n = series.len() as u32;
        for (i, (s, points)) in series.iter().zip(&cleaned).enumerate() {
            if points.is_empty() {
                continue;
            }
            let colour = series_colour(i);
            // Earlier series are drawn wider and with bigger markers, so a later series that
            // coincides with them leaves them visible.
            let wider = (n - 1 - i as u32).min(2);
            let (width, radius) = (2 + wider, 4 + wider);
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(width)))
                .map_err(&err)?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (20, 0)], colour.stroke_width(2))
                        + Circle::new((10, 0), 3, colour.filled())
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, radius, colour.filled())),
                )
                .map_err(&err)?;
        }
        draw_legend(
            &mut chart,
            cleaned.iter().flatten().copied(),
            (x0, x1),
            (y0, y1),
            title,
        )?;
        skipped_footer(&root, height, skipped, title)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// A heatmap of `values[row][col]` (for example layer × expert) with row and column labels, a
/// colour scale and a caption giving the largest cell.
///
/// Colours run from white at `min(0, smallest value)` to dark blue at the largest value; cell
/// values are printed in the cells; non-finite cells are grey and marked `n/a`.
///
/// # Shapes
/// `values: [row_labels.len()][col_labels.len()]`
///
/// # Errors
/// [`ReportError::BadData`] when there are no cells, the number of rows or of any row's values does
/// not match the labels (ragged input), or no cell is finite;
/// [`ReportError::Plot`] when the backend fails.
pub fn heatmap_svg(
    title: &str,
    row_labels: &[String],
    col_labels: &[String],
    values: &[Vec<f64>],
) -> Result<String> {
    if values.is_empty() || col_labels.is_empty() {
        return Err(bad(
            title,
            format!(
                "no cells ({} rows of values, {} column labels)",
                values.len(),
                col_labels.len()
            ),
        ));
    }
    if values.len() != row_labels.len() {
        return Err(bad(
            title,
            format!(
                "{} rows of values but {} row labels",
                values.len(),
                row_labels.len()
            ),
        ));
    }
    for (i, row) in values.iter().enumerate() {
        if row.len() != col_labels.len() {
            return Err(bad(
                title,
                format!(
                    "row {i} ({:?}) has {} values, expected {} (one per column label)",
                    row_labels[i],
                    row.len(),
                    col_labels.len()
                ),
            ));
        }
    }
    let mut best: Option<(f64, usize, usize)> = None;
    let mut min = f64::INFINITY;
    let mut non_finite = 0usize;
    for (r, row) in values.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            if !v.is_finite() {
                non_finite += 1;
                continue;
            }
            min = min.min(v);
            if best.is_none_or(|(b, _, _)| v > b) {
                best = Some((v, r, c));
            }
        }
    }
    let Some((max, max_r, max_c)) = best else {
        return Err(bad(
            title,
            format!(
                "all {} cells are non-finite",
                values.len() * col_labels.len()
            ),
        ));
    };
    let lo = min.min(0.0);
    let hi = if max > lo { max } else { lo + 1.0 };

    let rows: Vec<String> = row_labels
        .iter()
        .map(|l| shorten(l, MAX_LABEL_CHARS))
        .collect();
    let cols: Vec<String> = col_labels
        .iter()
        .map(|l| shorten(l, MAX_LABEL_CHARS))
        .collect();
    let cell = 40u32;
    let left = rows
        .iter()
        .map(|l| l.chars().count() as u32)
        .max()
        .unwrap_or(0)
        * CHAR_PX
        + 14;
    let longest_col = cols
        .iter()
        .map(|l| l.chars().count() as u32)
        .max()
        .unwrap_or(0);
    let rotate = longest_col * CHAR_PX > cell - 4;
    let col_area = if rotate {
        longest_col * ROTATED_CHAR_PX + 10
    } else {
        20
    };
    let (title_h, footer_h, scale_w) = (36u32, 30u32, 90u32);
    let grid_w = cell * cols.len() as u32;
    let grid_h = cell * rows.len() as u32;
    let scale_h = grid_h.max(120);
    let width = (left + grid_w + scale_w + 10).max(title.chars().count() as u32 * 10 + 20);
    let height = title_h + col_area + scale_h + footer_h;
    let top = title_h + col_area;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let err = draw_err(title);
        root.fill(&WHITE).map_err(&err)?;
        root.draw(&Text::new(title.to_string(), (10, 8), (FONT, 20)))
            .map_err(&err)?;
        let small = TextStyle::from((FONT, 12).into_font());
        for (r, label) in rows.iter().enumerate() {
            let y = (top + cell * r as u32 + cell / 2) as i32;
            root.draw(&Text::new(
                label.clone(),
                (left as i32 - 6, y),
                small.pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(&err)?;
        }
        for (c, label) in cols.iter().enumerate() {
            let x = (left + cell * c as u32 + cell / 2) as i32;
            let text = if rotate {
                // A quarter turn counter-clockwise, reading upwards from just above the grid.
                Text::new(
                    label.clone(),
                    (x - 6, top as i32 - 4),
                    small.transform(FontTransform::Rotate270),
                )
            } else {
                Text::new(
                    label.clone(),
                    (x, top as i32 - 4),
                    small.pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            };
            root.draw(&text).map_err(&err)?;
        }
        let value_style =
            TextStyle::from((FONT, 10).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        for (r, row) in values.iter().enumerate() {
            let y = (top + cell * r as u32) as i32;
            for (c, &v) in row.iter().enumerate() {
                let x = (left + cell * c as u32) as i32;
                let corners = [(x, y), (x + cell as i32 - 2, y + cell as i32 - 2)];
                let centre = (x + cell as i32 / 2 - 1, y + cell as i32 / 2 - 1);
                if !v.is_finite() {
                    root.draw(&Rectangle::new(corners, RGBColor(200, 200, 200).filled()))
                        .map_err(&err)?;
                    root.draw(&Text::new("n/a".to_string(), centre, value_style.clone()))
                        .map_err(&err)?;
                    continue;
                }
                let t = (v - lo) / (hi - lo);
                root.draw(&Rectangle::new(corners, shade(t).filled()))
                    .map_err(&err)?;
                let ink = if t > 0.55 { WHITE } else { BLACK };
                root.draw(&Text::new(number(v), centre, value_style.color(&ink)))
                    .map_err(&err)?;
            }
        }
        // Colour scale: a vertical gradient, `hi` at the top.
        let (sx, steps) = ((left + grid_w + 16) as i32, 40u32);
        for s in 0..steps {
            let y0 = top + scale_h * s / steps;
            let y1 = top + scale_h * (s + 1) / steps;
            let t = 1.0 - (s as f64 + 0.5) / steps as f64;
            root.draw(&Rectangle::new(
                [(sx, y0 as i32), (sx + 14, y1 as i32)],
                shade(t).filled(),
            ))
            .map_err(&err)?;
        }
        root.draw(&Rectangle::new(
            [(sx, top as i32), (sx + 14, (top + scale_h) as i32)],
            BLACK.stroke_width(1),
        ))
        .map_err(&err)?;
        let side = small.pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(
            number(hi),
            (sx + 18, top as i32 + 4),
            side.clone(),
        ))
        .map_err(&err)?;
        root.draw(&Text::new(
            number(lo),
            (sx + 18, (top + scale_h) as i32 - 4),
            side,
        ))
        .map_err(&err)?;
        let mut caption = format!(
            "max cell value {} ({}, {})",
            number(max),
            row_labels[max_r],
            col_labels[max_c]
        );
        if non_finite > 0 {
            caption.push_str(&format!("; {non_finite} non-finite cell(s) in grey"));
        }
        footer(&root, height, &caption).map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

fn bad(plot: &str, detail: impl Into<String>) -> ReportError {
    ReportError::BadData {
        plot: plot.to_string(),
        detail: detail.into(),
    }
}

/// The plotting area of a scatter or line chart over `x` × `y` (data units).
type XyChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The chart of [`scatter_svg`] and [`lines_svg`]: caption, margins (room at the bottom for
/// the skipped-points footer when `footer`), axis label areas and the data ranges.
fn xy_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    footer: bool,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Result<XyChart<'a, 'b>> {
    ChartBuilder::on(root)
        .caption(title, (FONT, 20))
        .margin(15)
        .margin_bottom(if footer { 35 } else { 15 })
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err(title))
}

/// The legend of the labelled series, in the corner of the plot that `points` crowd least.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut XyChart<'a, 'b>,
    points: impl Iterator<Item = (f64, f64)>,
    x: (f64, f64),
    y: (f64, f64),
    title: &str,
) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(quiet_corner(points, x, y))
        .label_font((FONT, 13))
        .draw()
        .map_err(draw_err(title))
}

/// The caption under a scatter or line chart counting the points not drawn (none: nothing).
fn skipped_footer(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    height: u32,
    skipped: usize,
    title: &str,
) -> Result<()> {
    if skipped == 0 {
        return Ok(());
    }
    footer(
        root,
        height,
        &format!("{skipped} point(s) with a non-finite coordinate not drawn"),
    )
    .map_err(draw_err(title))
}

fn draw_err<E: std::fmt::Display>(plot: &str) -> impl Fn(E) -> ReportError + '_ {
    move |e| ReportError::Plot {
        plot: plot.to_string(),
        detail: e.to_string(),
    }
}

/// A caption in the bottom left corner of `root` (`height` pixels high).
fn footer(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    height: u32,
    text: &str,
) -> std::result::Result<(), DrawingAreaErrorKind<std::io::Error>> {
    root.draw(&Text::new(
        text.to_string(),
        (12, height as i32 - 20),
        (FONT, 12).into_font().color(&RGBColor(90, 90, 90)),
    ))
}

/// The range of `values` widened by `lo_pad` / `hi_pad` of its span on each side; a single value
/// gets a range around it. Non-negative data (accuracies, losses, counts) gets at most a sliver
/// below 0 (3% of the range, so markers at 0 are not cut by the axis), never a tick below 0.
fn padded(values: impl Iterator<Item = f64>, lo_pad: f64, hi_pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let span = hi - lo;
    let (a, b) = if span <= 1e-12 * hi.abs().max(1.0) {
        let d = if lo.abs() > 0.0 { 0.1 * lo.abs() } else { 1.0 };
        (lo - d, hi + d)
    } else {
        (lo - lo_pad * span, hi + hi_pad * span)
    };
    if lo >= 0.0 && a < 0.0 {
        (-0.03 * b, b)
    } else {
        (a, b)
    }
}

/// The corner of the plot (for the legend box) with the fewest points in its outer 40% × 30%;
/// ties go to lower right, then upper left, upper right, lower left.
fn quiet_corner(
    points: impl Iterator<Item = (f64, f64)>,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> SeriesLabelPosition {
    let mut counts = [0usize; 4];
    for (x, y) in points {
        let (fx, fy) = ((x - x0) / (x1 - x0), (y - y0) / (y1 - y0));
        let (left, right, low, high) = (fx < 0.4, fx > 0.6, fy < 0.3, fy > 0.7);
        counts[0] += usize::from(right && low);
        counts[1] += usize::from(left && high);
        counts[2] += usize::from(right && high);
        counts[3] += usize::from(left && low);
    }
    let best = (0..4).min_by_key(|&i| (counts[i], i)).unwrap_or(0);
    [
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

/// The colour of series `i`: tab10, then golden-ratio hues.
fn series_colour(i: usize) -> RGBColor {
    if let Some(c) = PALETTE.get(i) {
        return *c;
    }
    let hue = (i as f64 * 0.618_033_988_75).fract();
    let (r, g, b) = HSLColor(hue, 0.65, 0.45).rgb();
    RGBColor(r, g, b)
}

/// White (t = 0) to dark blue (t = 1).
fn shade(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |to: f64| (255.0 - t * (255.0 - to)).round() as u8;
    RGBColor(lerp(8.0), lerp(48.0), lerp(107.0))
}

/// Tick labels of an axis of whole numbers: integers print without decimals, ticks between
/// them print nothing.
fn integer_ticks(v: &f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        String::new()
    }
}

/// A short rendering of a plotted number: 3 decimals near 1, 1 decimal in the hundreds, an
/// exponent otherwise.
fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(0.001..10_000.0).contains(&a) {
        format!("{v:.2e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `s` cut to `max` characters, the last one replaced by "…" when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_formed(svg: &str, must_contain: &[&str]) {
        assert!(
            svg.trim_start().starts_with("<svg"),
            "{}",
            &svg[..80.min(svg.len())]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        for s in must_contain {
            assert!(svg.contains(s), "missing {s:?} in the SVG");
        }
    }

    fn is_bad_data(r: Result<String>) -> bool {
        matches!(r, Err(ReportError::BadData { .. }))
    }

    fn point(label: &str, x: f64, y: f64, highlight: bool) -> Point {
        Point {
            label: label.into(),
            x,
            y,
            highlight,
        }
    }

    #[test]
    fn scatter_has_title_labels_and_legend() {
        let pts = [
            point("alpha", 0.1, 0.5, false),
            point("beta", 0.4, 0.2, true),
            point("gamma", 0.9, 0.8, false),
        ];
        let svg = scatter_svg("Bank map", "similarity", "accuracy", &pts).unwrap();
        well_formed(
            &svg,
            &[
                "Bank map",
                "similarity",
                "accuracy",
                "alpha",
                "beta",
                "gamma",
                "chosen",
            ],
        );
        assert!(!svg.contains("not drawn"));
    }

    #[test]
    fn scatter_skips_non_finite_and_says_so() {
        let pts = [
            point("ok", 1.0, 2.0, false),
            point("nan", f64::NAN, 2.0, false),
            point("inf", 1.0, f64::INFINITY, false),
        ];
        let svg = scatter_svg("t", "x", "y", &pts).unwrap();
        well_formed(
            &svg,
            &["ok", "2 point(s) with a non-finite coordinate not drawn"],
        );
        assert!(!svg.contains(">nan"));
        assert!(
            !svg.contains("chosen"),
            "no legend without highlighted points"
        );
        assert!(is_bad_data(scatter_svg("t", "x", "y", &pts[1..])));
        assert!(is_bad_data(scatter_svg("t", "x", "y", &[])));
    }

    #[test]
    fn scatter_single_point_and_escaping() {
        let svg = scatter_svg("a < b & c", "x", "y", &[point("p<1>", 3.0, 3.0, false)]).unwrap();
        well_formed(&svg, &["a &lt; b &amp; c", "p&lt;1&gt;"]);
    }

    fn bar(label: &str, value: f64, stderr: Option<f64>, highlight: bool) -> Bar {
        Bar {
            label: label.into(),
            value,
            stderr,
            highlight,
        }
    }

    #[test]
    fn bars_have_labels_values_and_whiskers() {
        let bars = [
            bar("k-center", 0.433, Some(0.045), true),
            bar("random", 0.38, Some(0.04), false),
            bar("none", 0.2, None, false),
        ];
        let svg = bars_svg("Accuracy", "exact match", &bars).unwrap();
        well_formed(
            &svg,
            &[
                "Accuracy",
                "exact match",
                "k-center",
                "random",
                "none",
                "0.433",
                "chosen",
            ],
        );
        // The y axis title is a quarter turn the other way (rotate(270, ...)).
        assert!(!svg.contains("rotate(90,"), "short labels stay horizontal");
    }

    #[test]
    fn counts_print_without_decimals() {
        let bars = [
            bar("qa", 160.0, None, false),
            bar("math", 12.0, None, false),
        ];
        let svg = bars_svg("Task mix", "records", &bars).unwrap();
        well_formed(&svg, &["160"]);
        assert!(
            !svg.contains("160.0") && !svg.contains("12.000"),
            "a count printed with decimals"
        );
        // One fractional value makes every value print as a measurement.
        let mixed = [bar("a", 2.0, None, false), bar("b", 0.5, None, false)];
        well_formed(&bars_svg("t", "y", &mixed).unwrap(), &["2.000", "0.500"]);
    }

    #[test]
    fn long_bar_labels_are_rotated_and_shortened() {
        let long = "a-very-long-adapter-name-from-the-hub-that-goes-on";
        let svg = bars_svg(
            "t",
            "y",
            &[bar(long, 1.0, None, false), bar("b", 2.0, None, false)],
        )
        .unwrap();
        well_formed(&svg, &["rotate(90,", "a-very-long-adapter-nam…"]);
        assert!(!svg.contains(long));
    }

    #[test]
    fn bars_nan_and_empty() {
        let svg = bars_svg(
            "t",
            "y",
            &[
                bar("x", f64::NAN, Some(0.1), false),
                bar("y", 1.0, Some(f64::NAN), false),
            ],
        )
        .unwrap();
        well_formed(&svg, &["n/a", "x", "y"]);
        assert!(is_bad_data(bars_svg("t", "y", &[])));
        assert!(is_bad_data(bars_svg(
            "t",
            "y",
            &[bar("x", f64::NAN, None, false)]
        )));
        // Negative values and all-zero bars still draw.
        well_formed(
            &bars_svg("t", "y", &[bar("neg", -1.0, Some(0.5), false)]).unwrap(),
            &["neg"],
        );
        well_formed(
            &bars_svg("t", "y", &[bar("zero", 0.0, None, false)]).unwrap(),
            &["zero"],
        );
    }

    #[test]
    fn lines_have_legend_and_distinct_colours() {
        let series = [
            Series {
                name: "k-center".into(),
                points: vec![(4.0, 0.2), (8.0, 0.3), (12.0, 0.35)],
            },
            Series {
                name: "random".into(),
                points: vec![(4.0, 0.2), (8.0, 0.25), (12.0, f64::NAN)],
            },
        ];
        let svg = lines_svg("Evolve", "labelled items", "test accuracy", &series).unwrap();
        well_formed(
            &svg,
            &[
                "Evolve",
                "labelled items",
                "test accuracy",
                "k-center",
                "random",
                "1 point(s) with a non-finite coordinate not drawn",
            ],
        );
        let colour = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
        assert!(svg.contains(&colour(series_colour(0))));
        assert!(svg.contains(&colour(series_colour(1))));
        assert_ne!(series_colour(0), series_colour(1));
        assert_ne!(series_colour(10), series_colour(11));
    }

    #[test]
    fn lines_bad_data() {
        assert!(is_bad_data(lines_svg("t", "x", "y", &[])));
        let nan = Series {
            name: "s".into(),
            points: vec![(f64::NAN, 1.0)],
        };
        let empty = Series {
            name: "e".into(),
            points: vec![],
        };
        assert!(is_bad_data(lines_svg("t", "x", "y", &[nan, empty])));
    }

    #[test]
    fn heatmap_labels_scale_and_caption() {
        let rows: Vec<String> = (0..3).map(|l| format!("layer {l}")).collect();
        let cols: Vec<String> = ["math", "code", "a-long-expert-name"]
            .map(String::from)
            .to_vec();
        let values = vec![
            vec![0.2, 0.5, 0.3],
            vec![0.1, 0.7, 0.2],
            vec![0.3, 0.3, f64::NAN],
        ];
        let svg = heatmap_svg("Routing", &rows, &cols, &values).unwrap();
        well_formed(
            &svg,
            &[
                "Routing",
                "layer 0",
                "layer 2",
                "math",
                "a-long-expert-name",
                "max cell value 0.700 (layer 1, code)",
                "1 non-finite cell(s)",
                "rotate(270",
            ],
        );
    }

    #[test]
    fn heatmap_bad_data() {
        let rows = vec!["r0".to_string(), "r1".to_string()];
        let cols = vec!["c0".to_string(), "c1".to_string()];
        let ragged = vec![vec![1.0, 2.0], vec![3.0]];
        assert!(is_bad_data(heatmap_svg("t", &rows, &cols, &ragged)));
        assert!(is_bad_data(heatmap_svg(
            "t",
            &rows[..1],
            &cols,
            &[vec![1.0, 2.0], vec![1.0, 2.0]]
        )));
        assert!(is_bad_data(heatmap_svg("t", &[], &cols, &[])));
        let nan = vec![vec![f64::NAN; 2]; 2];
        assert!(is_bad_data(heatmap_svg("t", &rows, &cols, &nan)));
        // A constant map still draws.
        let flat = vec![vec![0.0; 2]; 2];
        well_formed(
            &heatmap_svg("t", &rows, &cols, &flat).unwrap(),
            &["r1", "c1"],
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
        assert_eq!(number(0.4333), "0.433");
        assert_eq!(number(123.45), "123.5");
        assert_eq!(number(0.0), "0");
        assert_eq!(padded([2.0].into_iter(), 0.1, 0.1), (1.8, 2.2));
        assert_eq!(padded([0.0, 10.0].into_iter(), 0.1, 0.2), (-0.36, 12.0));
        assert_eq!(padded([-1.0, 9.0].into_iter(), 0.1, 0.2), (-2.0, 11.0));
        assert_eq!(padded([0.0, 0.0].into_iter(), 0.1, 0.1), (-0.03, 1.0));
        assert_eq!(padded([0.5, 0.6].into_iter(), 0.1, 0.1).0, 0.49);
        let corner = |pts: &[(f64, f64)]| {
            format!(
                "{:?}",
                quiet_corner(pts.iter().copied(), (0.0, 1.0), (0.0, 1.0))
            )
        };
        assert_eq!(corner(&[]), "LowerRight");
        assert_eq!(corner(&[(0.9, 0.1)]), "UpperLeft");
        assert_eq!(corner(&[(0.9, 0.1), (0.1, 0.9)]), "UpperRight");
    }
}
