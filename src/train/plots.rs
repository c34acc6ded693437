//! PNG plots of a run, drawn with plotters and the bundled DejaVu Sans font.

use super::{RunSummary, TrainError};
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

static FONT: Once = Once::new();

fn ensure_font() {
    FONT.call_once(|| {
        // The font is compiled in, so plots never depend on the fonts of the machine.
        let bytes: &'static [u8] = include_bytes!("../../assets/DejaVuSans.ttf");
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, bytes);
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Plot {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// A line chart of `values` against epochs 1, 2, ….
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    values: &[f64],
) -> Result<(), TrainError> {
    ensure_font();
    let root = BitMapBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.1).max(1e-6);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1f64..(values.len().max(2) as f64), (lo - pad)..(hi + pad))
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let points: Vec<(f64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f64, v))
        .collect();
    chart
        .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(points.iter().map(|&p| Circle::new(p, 4, BLUE.filled())))
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// Bars of per-class accuracy.
pub fn bar_chart(
    path: &Path,
    title: &str,
    names: &[String],
    values: &[f64],
) -> Result<(), TrainError> {
    class_bars(path, title, names, &[(String::new(), values.to_vec())])
}

/// A heatmap of `p̄` (rows: true class, columns: output) with the values written in.
pub fn heatmap(path: &Path, title: &str, matrix: &[Vec<f64>]) -> Result<(), TrainError> {
    matrix_cells(
        path,
        (title, 22),
        matrix,
        "output k".into(),
        0.2,
        |_, _, v| {
            let shade = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
            let text = if v >= 0.995 {
                "1.0".to_string()
            } else {
                format!(".{:02}", (v * 100.0).round() as u32)
            };
            let ink = if v > 0.5 { WHITE } else { BLACK };
            (RGBColor(shade, shade, 255), ink, text)
        },
    )
}

/// One coloured, labelled cell per entry of `matrix` (rows: true class `j`, columns:
/// output `k`): `cell(j, k, value)` gives its fill, its ink and its text, written
/// `text_dx` of a cell from its left edge.
fn matrix_cells(
    path: &Path,
    (title, title_size): (&str, u32),
    matrix: &[Vec<f64>],
    x_desc: String,
    text_dx: f64,
    cell: impl Fn(usize, usize, f64) -> (RGBColor, RGBColor, String),
) -> Result<(), TrainError> {
    ensure_font();
    let rows = matrix.len().max(1);
    let cols = matrix.first().map_or(1, |r| r.len().max(1));
    let side = (560 / rows.max(cols)).clamp(30, 90) as u32;
    let size = (cols as u32 * side + 140, rows as u32 * side + 120);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", title_size))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..cols as f64, rows as f64..0f64)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(cols + 1)
        .y_labels(rows + 1)
        .x_label_formatter(&|x| format!("{}", x.floor() as usize))
        .y_label_formatter(&|y| format!("{}", y.floor() as usize))
        .x_desc(x_desc)
        .y_desc("true class j")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (j, row) in matrix.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            let (fill, ink, text) = cell(j, k, v);
            let (x, y) = (k as f64, j as f64);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    fill.filled(),
                )))
                .map_err(|e| plot_err(path, e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x + text_dx, y + 0.35),
                    ("sans-serif", (side / 3).max(10)).into_font().color(&ink),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    root.present().map_err(|e| plot_err(path, e))
}

/// Several series against epochs 1, 2, …, with a legend.
pub fn multi_line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(String, Vec<f64>)],
) -> Result<(), TrainError> {
    ensure_font();
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let values = series.iter().flat_map(|(_, v)| v.iter().copied());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.08).max(1e-6);
    let epochs = series
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1f64..epochs as f64, (lo - pad)..(hi + pad))
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (i, (name, v)) in series.iter().enumerate() {
        let colour = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .map(|(e, &y)| ((e + 1) as f64, y))
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// Per-class bars of several series side by side, with a legend.
pub fn grouped_bar_chart(
    path: &Path,
    title: &str,
    names: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), TrainError> {
    class_bars(path, title, names, series)
}

/// Bars per class, one colour per series; a legend (above the bars) when there are several.
fn class_bars(
    path: &Path,
    title: &str,
    names: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<(), TrainError> {
    ensure_font();
    let several = series.len() > 1;
    let size = if several { (960, 480) } else { (720, 440) };
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let n = names.len().max(1);
    let top = if several { 1.5 } else { 1.05 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(|e| plot_err(path, e))?;
    let labels = names.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| labels.get(x.floor() as usize).cloned().unwrap_or_default())
        .x_desc("class")
        .y_desc("accuracy")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let width = 0.7 / series.len().max(1) as f64;
    for (i, (name, v)) in series.iter().enumerate() {
        let colour = if several {
            Palette99::pick(i).to_rgba()
        } else {
            BLUE.mix(0.7)
        };
        let bars = chart
            .draw_series(v.iter().enumerate().map(|(k, &y)| {
                let x0 = k as f64 + 0.15 + i as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, y)], colour.filled())
            }))
            .map_err(|e| plot_err(path, e))?;
        if several {
            bars.label(name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
            });
        }
    }
    if several {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(path, e))?;
    }
    root.present().map_err(|e| plot_err(path, e))
}

/// A heatmap of the non-target probabilities of `p̄` (rows: true class, columns: output):
/// the diagonal is greyed out and the colour scale runs to the largest off-diagonal value,
/// so that how a loss spreads probability over the non-target classes is visible. Values
/// are written in thousandths.
pub fn off_diagonal_heatmap(
    path: &Path,
    title: &str,
    matrix: &[Vec<f64>],
) -> Result<(), TrainError> {
    let cols = matrix.first().map_or(1, |r| r.len().max(1));
    let top = matrix
        .iter()
        .enumerate()
        .flat_map(|(j, r)| {
            r.iter()
                .enumerate()
                .filter(move |(k, _)| *k != j)
                .map(|(_, &v)| v)
        })
        .fold(1e-12, f64::max);
    let x_desc = format!("output k (off-diagonal ×1000, scale to {top:.3})");
    matrix_cells(path, (title, 20), matrix, x_desc, 0.15, |j, k, v| {
        if j == k && cols > 1 {
            (RGBColor(200, 200, 200), BLACK, format!("{v:.2}"))
        } else {
            let t = (v / top).clamp(0.0, 1.0);
            let shade = (255.0 * (1.0 - t)) as u8;
            let ink = if t > 0.6 { WHITE } else { BLACK };
            (
                RGBColor(255, shade, shade),
                ink,
                format!("{:.0}", v * 1000.0),
            )
        }
    })
}

/// The plots of a finished run: loss and accuracy per epoch, per-class test accuracy, and
/// the class-averaged probabilities `p̄` on the training and test sets.
pub fn draw_run_plots(
    dir: &Path,
    s: &RunSummary,
    class_names: &[String],
) -> Result<(), TrainError> {
    let losses: Vec<f64> = s.epochs.iter().map(|e| e.train_loss).collect();
    let accs: Vec<f64> = s.epochs.iter().map(|e| 100.0 * e.test_accuracy).collect();
    line_chart(&dir.join("loss.png"), "training loss", "loss", &losses)?;
    line_chart(
        &dir.join("accuracy.png"),
        "test accuracy",
        "accuracy (%)",
        &accs,
    )?;
    bar_chart(
        &dir.join("per_class_accuracy.png"),
        "per-class test accuracy",
        class_names,
        &s.test.per_class_accuracy,
    )?;
    heatmap(
        &dir.join("p_bar_train.png"),
        "class-averaged probabilities, training set",
        &s.train.p_bar,
    )?;
    heatmap(
        &dir.join("p_bar_test.png"),
        "class-averaged probabilities, test set",
        &s.test.p_bar,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        line_chart(&p, "loss", "loss", &[1.0, 0.5, 0.3]).unwrap();
        let b = dir.path().join("bars.png");
        bar_chart(
            &b,
            "per-class accuracy",
            &["a".into(), "b".into()],
            &[0.9, 0.4],
        )
        .unwrap();
        let h = dir.path().join("heat.png");
        heatmap(&h, "p̄", &[vec![0.9, 0.1], vec![0.2, 0.7]]).unwrap();
        let m = dir.path().join("lines.png");
        let series = vec![
            ("a".to_string(), vec![1.0, 0.5]),
            ("b".to_string(), vec![0.9, 0.4]),
        ];
        multi_line_chart(&m, "loss", "loss", &series).unwrap();
        let g = dir.path().join("grouped.png");
        grouped_bar_chart(&g, "accuracy", &["0".into(), "1".into()], &series).unwrap();
        let o = dir.path().join("off.png");
        off_diagonal_heatmap(&o, "p̄", &[vec![0.9, 0.1], vec![0.2, 0.7]]).unwrap();
        for f in [p, b, h, m, g, o] {
            let bytes = std::fs::read(&f).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{}", f.display());
        }
    }
}
