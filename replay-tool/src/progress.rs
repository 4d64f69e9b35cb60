//! A small progress bar on stderr, drawn only when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const WIDTH: usize = 30;
const REDRAW: Duration = Duration::from_millis(100);

/// A progress bar; silent unless stderr is a terminal.
pub struct Bar {
    enabled: bool,
    label: String,
    started: Instant,
    last_draw: Option<Instant>,
    drawn: bool,
}

impl Bar {
    /// A bar labelled `label`, shown only on a terminal.
    pub fn new(label: impl Into<String>) -> Self {
        Bar {
            enabled: std::io::stderr().is_terminal(),
            label: label.into(),
            started: Instant::now(),
            last_draw: None,
            drawn: false,
        }
    }

    /// Shows `done` of `total` (at most ten redraws a second).
    pub fn set(&mut self, done: u64, total: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|at| now.duration_since(at) < REDRAW && done < total)
        {
            return;
        }
        self.last_draw = Some(now);
        let fraction = if total == 0 {
            1.0
        } else {
            (done as f64 / total as f64).min(1.0)
        };
        let filled = (fraction * WIDTH as f64).round() as usize;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "\r{} [{}{}] {:>3.0}% {done}/{total} {:.0}/s ",
            self.label,
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            fraction * 100.0,
            done as f64 / secs,
        );
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.drawn = true;
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.enabled && self.drawn {
            let _ = writeln!(std::io::stderr());
            self.drawn = false;
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}
