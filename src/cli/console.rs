//! What `tensorgrad train` prints: the run's header, a progress bar on a terminal, one line
//! per epoch and the final summary. Output to a closed stdout is ignored, so
//! `tensorgrad train | head` does not panic.

use std::io::{IsTerminal, Write};
use tensorgrad::train::Event;

/// `println!` that ignores a closed stdout.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Prints a run's events; with `quiet`, only the final summary.
pub struct Console {
    quiet: bool,
    interactive: bool,
    bar: Option<indicatif::ProgressBar>,
    train_images: u64,
    epochs: usize,
}

impl Console {
    /// A console printing to stdout.
    pub fn new(quiet: bool) -> Self {
        Console {
            quiet,
            interactive: std::io::stdout().is_terminal() && !quiet,
            bar: None,
            train_images: 0,
            epochs: 0,
        }
    }

    /// Reports one event.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Started {
                config,
                parameters,
                train_images,
                test_images,
                class_counts,
                threads,
                out_dir,
                warnings,
            } => {
                for w in warnings.iter() {
                    eprintln!("warning: {w}");
                }
                self.train_images = *train_images as u64;
                self.epochs = config.epochs;
                if !self.quiet {
                    say!(
                        "training {} ({} parameters) on {} [{} train / {} test images, class counts {:?}] with {}, {} threads → {}",
                        config.model,
                        parameters,
                        config.dataset,
                        train_images,
                        test_images,
                        class_counts,
                        config.loss.loss,
                        threads,
                        out_dir.display()
                    );
                }
            }
            Event::Step(s) => {
                if !self.interactive {
                    return;
                }
                let bar = self
                    .bar
                    .get_or_insert_with(|| progress_bar(self.train_images));
                bar.set_position(s.images as u64);
                if s.batch % 10 == 0 {
                    bar.set_message(format!(
                        "epoch {}/{} loss {:.4}",
                        s.epoch + 1,
                        self.epochs,
                        s.mean_loss
                    ));
                }
            }
            Event::Epoch {
                record,
                test,
                epochs,
            } => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
                if !self.quiet {
                    say!(
                        "epoch {:>3}/{}  loss {:.4}  test acc {:.2}%  balanced {:.2}%  {:.1}s  {:.0} img/s",
                        record.epoch,
                        epochs,
                        record.train_loss,
                        100.0 * test.accuracy,
                        100.0 * test.balanced_accuracy,
                        record.seconds.unwrap_or(f64::NAN),
                        record.images_per_second.unwrap_or(f64::NAN)
                    );
                }
            }
            Event::Finished(summary) => {
                say!(
                    "test accuracy {:.2}% (balanced {:.2}%) after {} epochs in {:.1}s; outputs in {}",
                    100.0 * summary.test.accuracy,
                    100.0 * summary.test.balanced_accuracy,
                    summary.epochs.len(),
                    summary.seconds,
                    summary.out_dir.display()
                );
                let _ = std::io::stdout().flush();
            }
        }
    }
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}
