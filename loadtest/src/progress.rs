//! The live progress line on stderr, shared by the scenarios.
//!
//! On a terminal one line is redrawn in place (at most a few times a second);
//! otherwise (a log file, a pipe) a plain line is written every few seconds. Lines
//! that must stay (phase changes, warnings) go through [`Progress::note`], which
//! clears the live line first so the two never mix.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::report::count;

/// Redraws on a terminal at most this often.
const TTY_EVERY: Duration = Duration::from_millis(250);
/// Plain lines when stderr is not a terminal, at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What one progress line shows.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Phase, e.g. "connect" or "hold".
    pub phase: &'static str,
    /// Connections (or messages) up / done so far, and the goal.
    pub up: u64,
    pub target: u64,
    /// Per second, over the last few seconds.
    pub rate: Option<f64>,
    pub failures: u64,
    /// Anything else, appended as is.
    pub extra: String,
    /// Time since the phase started, and its planned length if it has one.
    pub elapsed: Duration,
    pub planned: Option<Duration>,
}

impl Status {
    /// "connect  12,345 / 200,000 up (6.2 %)  9,876/s  failed 0  closed 3  [12 s]".
    pub fn render(&self) -> String {
        let pct = if self.target > 0 {
            format!(" ({:.1} %)", self.up as f64 * 100.0 / self.target as f64)
        } else {
            String::new()
        };
        let mut line = format!(
            "{:<8}{} / {} up{pct}",
            self.phase,
            count(self.up),
            count(self.target)
        );
        if let Some(rate) = self.rate {
            line.push_str(&format!("  {}/s", count(rate.max(0.0).round() as u64)));
        }
        line.push_str(&format!("  failed {}", count(self.failures)));
        if !self.extra.is_empty() {
            line.push_str("  ");
            line.push_str(&self.extra);
        }
        let secs = self.elapsed.as_secs();
        match self.planned {
            Some(p) => line.push_str(&format!("  [{secs} / {} s]", p.as_secs())),
            None => line.push_str(&format!("  [{secs} s]")),
        }
        line
    }
}

/// The progress line of one run.
pub struct Progress {
    enabled: bool,
    tty: bool,
    every: Duration,
    last: Option<Instant>,
    /// A live line is on screen (terminal only).
    drawn: bool,
}

impl Progress {
    /// Nothing is written when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Self {
            enabled: !quiet,
            tty,
            every: if tty { TTY_EVERY } else { PLAIN_EVERY },
            last: None,
            drawn: false,
        }
    }

    /// Shows `status` if a redraw is due (`force`: now).
    pub fn show(&mut self, status: &Status, force: bool) {
        if !self.enabled || (!force && self.last.is_some_and(|t| t.elapsed() < self.every)) {
            return;
        }
        self.last = Some(Instant::now());
        let line = status.render();
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Carriage return, erase the line, draw; no newline so it is redrawn in place.
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "  {line}");
        }
        let _ = err.flush();
    }

    /// A line that stays, above the live one.
    pub fn note(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        self.clear();
        eprintln!("{text}");
    }

    /// A line that stays and is written even when quiet (something went wrong).
    pub fn warn(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
    }

    /// Removes the live line (before the final table).
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A rate over a sliding window of cumulative readings.
pub struct Rate {
    window: Duration,
    points: std::collections::VecDeque<(Instant, u64)>,
}

impl Rate {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            points: std::collections::VecDeque::new(),
        }
    }

    /// Adds a reading of the cumulative count at `now`; returns the rate per second
    /// over the window (`None` until two readings are far enough apart).
    pub fn observe(&mut self, now: Instant, total: u64) -> Option<f64> {
        self.points.push_back((now, total));
        while self.points.len() > 2 && now.duration_since(self.points[1].0) >= self.window {
            self.points.pop_front();
        }
        let &(t0, n0) = self.points.front()?;
        let dt = now.duration_since(t0).as_secs_f64();
        (dt >= 0.5).then(|| total.saturating_sub(n0) as f64 / dt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_status() {
        let s = Status {
            phase: "connect",
            up: 12_345,
            target: 200_000,
            rate: Some(9876.4),
            failures: 2,
            extra: "closed 3".into(),
            elapsed: Duration::from_millis(12_400),
            planned: None,
        };
        assert_eq!(
            s.render(),
            "connect 12,345 / 200,000 up (6.2 %)  9,876/s  failed 2  closed 3  [12 s]"
        );
        let h = Status {
            phase: "hold",
            up: 10,
            target: 10,
            planned: Some(Duration::from_secs(60)),
            elapsed: Duration::from_secs(5),
            ..Status::default()
        };
        assert_eq!(
            h.render(),
            "hold    10 / 10 up (100.0 %)  failed 0  [5 / 60 s]"
        );
    }

    #[test]
    fn rate_over_a_window() {
        let t = Instant::now();
        let mut r = Rate::new(Duration::from_secs(2));
        assert_eq!(r.observe(t, 0), None);
        assert_eq!(r.observe(t + Duration::from_secs(1), 1000), Some(1000.0));
        assert_eq!(r.observe(t + Duration::from_secs(2), 3000), Some(1500.0));
        // The first reading leaves the window: the rate follows the recent pace.
        assert_eq!(r.observe(t + Duration::from_secs(3), 4000), Some(1500.0));
        assert_eq!(r.observe(t + Duration::from_secs(5), 4000), Some(0.0));
    }
}
