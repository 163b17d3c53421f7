//! The progress bar of `cairn compact`. It is drawn on stderr only when stderr is a terminal
//! and the output is not `--json`; pipes, scripts and log files never see it.

use std::borrow::Cow;

use cairn::CompactionPhase;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// What the bar shows: the phase, the bar (as wide as the terminal allows), bytes read of
/// the total, and time left.
const TEMPLATE: &str = "{msg:8} [{wide_bar}] {bytes}/{total_bytes} ({eta} left)";

/// A progress bar fed by [`cairn::Store::compact_with_progress`]. Dropping it clears it, so
/// that the summary (or an error line) is all that stays on the screen.
pub struct CompactionBar {
    bar: ProgressBar,
    phase: Option<CompactionPhase>,
}

impl CompactionBar {
    /// A bar on stderr when `visible`, otherwise one that draws nothing.
    pub fn new(visible: bool) -> Self {
        let bar = if visible {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        // The template is a constant: a bad one is a programmer bug, caught by the unit test
        // below; the default style is still a usable bar.
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        CompactionBar { bar, phase: None }
    }

    /// Whether the bar is drawn: only for people at a terminal, never with `--json`.
    pub fn wanted(stderr_is_terminal: bool, json: bool) -> bool {
        stderr_is_terminal && !json
    }

    /// Moves the bar to where the compaction is.
    pub fn update(&mut self, progress: &cairn::CompactionProgress) {
        self.advance(progress.phase, progress.done_bytes, progress.total_bytes);
    }

    fn advance(&mut self, phase: CompactionPhase, done_bytes: u64, total_bytes: u64) {
        if self.phase != Some(phase) {
            self.phase = Some(phase);
            self.bar.set_message(phase_label(phase));
        }
        if self.bar.length() != Some(total_bytes) {
            self.bar.set_length(total_bytes);
        }
        self.bar.set_position(done_bytes);
    }
}

impl Drop for CompactionBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// The phase as the bar shows it.
fn phase_label(phase: CompactionPhase) -> Cow<'static, str> {
    match phase {
        CompactionPhase::Scan => Cow::Borrowed("reading"),
        CompactionPhase::Write => Cow::Borrowed("writing"),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_valid() {
        assert!(ProgressStyle::with_template(TEMPLATE).is_ok());
    }

    #[test]
    fn drawn_only_on_a_terminal_and_never_with_json() {
        assert!(CompactionBar::wanted(true, false));
        assert!(!CompactionBar::wanted(true, true));
        assert!(!CompactionBar::wanted(false, false));
        assert!(!CompactionBar::wanted(false, true));
    }

    #[test]
    fn a_hidden_bar_follows_the_reports() {
        let mut bar = CompactionBar::new(false);
        bar.advance(CompactionPhase::Scan, 40, 100);
        assert_eq!(bar.bar.position(), 40);
        assert_eq!(bar.bar.length(), Some(100));
        assert_eq!(bar.bar.message(), "reading");
        bar.advance(CompactionPhase::Write, 100, 100);
        assert_eq!(bar.bar.message(), "writing");
    }
}
