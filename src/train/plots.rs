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
    ensure_font();
    let root = BitMapBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let n = values.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..n as f64, 0f64..1.05)
        .map_err(|e| plot_err(path, e))?;
    let names = names.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&|x| names.get(x.floor() as usize).cloned().unwrap_or_default())
        .x_desc("class")
        .y_desc("accuracy")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(values.iter().enumerate().map(|(k, &v)| {
            Rectangle::new(
                [(k as f64 + 0.15, 0.0), (k as f64 + 0.85, v)],
                BLUE.mix(0.7).filled(),
            )
        }))
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))
}

/// A heatmap of `p̄` (rows: true class, columns: output) with the values written in.
pub fn heatmap(path: &Path, title: &str, matrix: &[Vec<f64>]) -> Result<(), TrainError> {
    ensure_font();
    let rows = matrix.len().max(1);
    let cols = matrix.first().map_or(1, |r| r.len().max(1));
    let cell = (560 / rows.max(cols)).clamp(30, 90) as u32;
    let size = (cols as u32 * cell + 140, rows as u32 * cell + 120);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
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
        .x_desc("output k")
        .y_desc("true class j")
        .draw()
        .map_err(|e| plot_err(path, e))?;
    for (j, row) in matrix.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            let shade = (255.0 * (1.0 - v.clamp(0.0, 1.0))) as u8;
            let colour = RGBColor(shade, shade, 255);
            let (x, y) = (k as f64, j as f64);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    colour.filled(),
                )))
                .map_err(|e| plot_err(path, e))?;
            let text = if v >= 0.995 {
                "1.0".to_string()
            } else {
                format!(".{:02}", (v * 100.0).round() as u32)
            };
            let ink = if v > 0.5 { WHITE } else { BLACK };
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x + 0.2, y + 0.35),
                    ("sans-serif", (cell / 3).max(10)).into_font().color(&ink),
                )))
                .map_err(|e| plot_err(path, e))?;
        }
    }
    root.present().map_err(|e| plot_err(path, e))
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
        for f in [p, b, h] {
            let bytes = std::fs::read(&f).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{}", f.display());
        }
    }
}
