//! The lines the extractor child prints on stdout for the parent: one event per line, words
//! separated by spaces, flushed as soon as written. A line is printed after what it reports
//! is done (a page committed to the sink, a checkpoint durable), so the parent's view is
//! never ahead of the disk.

use std::fmt;
use std::str::FromStr;

/// The demo's two jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DemoJob {
    /// A GitHub-style sync: cursor resume.
    Github,
    /// A Jira-style sync: full restart.
    Jira,
}

impl DemoJob {
    pub const ALL: [DemoJob; 2] = [DemoJob::Github, DemoJob::Jira];

    /// The job's name in the store and the sink.
    pub fn name(self) -> &'static str {
        match self {
            DemoJob::Github => "github_sync",
            DemoJob::Jira => "jira_sync",
        }
    }

    fn from_name(name: &str) -> Option<DemoJob> {
        DemoJob::ALL.into_iter().find(|job| job.name() == name)
    }
}

/// One event reported by the extractor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// The store is open: how long the open took and its recovery scan within it (µs), and
    /// what that recovery found and cut off (a torn write at the tail after a kill).
    Open {
        open_us: u64,
        recovery_us: u64,
        findings: u64,
        discarded_bytes: u64,
    },
    /// A job is ready to extract after planning: the decision, the run's attempt, the
    /// checkpoint it resumes from (cursor resume only), and the time to recover (µs): the
    /// store's open plus this job's planning, clearing and `start_run`.
    Ready {
        job: DemoJob,
        decision: String,
        attempt: u32,
        from_seq: Option<u64>,
        recover_us: u64,
    },
    /// A full restart set the checkpoint `reference_seq` aside.
    Restart { job: DemoJob, reference_seq: u64 },
    /// The job had already finished (a `Normal` plan): nothing to do.
    Skipped { job: DemoJob },
    /// A page of `records` was committed to the sink; `last` when it is the job's last.
    Page {
        job: DemoJob,
        records: u64,
        last: bool,
    },
    /// A checkpoint is durable.
    Saved {
        job: DemoJob,
        seq: u64,
        processed: u64,
        trigger: String,
    },
    /// The API's rate limit made the job wait; `saved` when it checkpointed first.
    RateLimited { job: DemoJob, saved: bool },
    /// The run failed and recorded it (`fail_run`); the process exits with status 3.
    Failed { job: DemoJob, error: String },
    /// The job finished (`succeed_run`).
    Done { job: DemoJob, processed: u64 },
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Line::Open {
                open_us,
                recovery_us,
                findings,
                discarded_bytes,
            } => write!(
                f,
                "open {open_us} {recovery_us} {findings} {discarded_bytes}"
            ),
            Line::Ready {
                job,
                decision,
                attempt,
                from_seq,
                recover_us,
            } => {
                let from = from_seq.map_or("-".to_owned(), |seq| seq.to_string());
                write!(
                    f,
                    "ready {} {decision} {attempt} {from} {recover_us}",
                    job.name()
                )
            }
            Line::Restart { job, reference_seq } => {
                write!(f, "restart {} {reference_seq}", job.name())
            }
            Line::Skipped { job } => write!(f, "skipped {}", job.name()),
            Line::Page { job, records, last } => {
                let more = if *last { "last" } else { "more" };
                write!(f, "page {} {records} {more}", job.name())
            }
            Line::Saved {
                job,
                seq,
                processed,
                trigger,
            } => write!(f, "saved {} {seq} {processed} {trigger}", job.name()),
            Line::RateLimited { job, saved } => {
                write!(f, "rate_limited {} {saved}", job.name())
            }
            Line::Failed { job, error } => write!(f, "failed {} {error}", job.name()),
            Line::Done { job, processed } => write!(f, "done {} {processed}", job.name()),
        }
    }
}

impl FromStr for Line {
    type Err = String;

    fn from_str(text: &str) -> Result<Line, String> {
        let bad = || format!("unexpected line from the extractor: {text:?}");
        let mut words = text.splitn(6, ' ');
        let kind = words.next().ok_or_else(bad)?;
        let mut word = || words.next().ok_or_else(bad);
        let number = |w: &str| w.parse::<u64>().map_err(|_| bad());
        if kind == "open" {
            return Ok(Line::Open {
                open_us: number(word()?)?,
                recovery_us: number(word()?)?,
                findings: number(word()?)?,
                discarded_bytes: number(word()?)?,
            });
        }
        let job = DemoJob::from_name(word()?).ok_or_else(bad)?;
        Ok(match kind {
            "ready" => {
                let decision = word()?.to_owned();
                let attempt = word()?.parse().map_err(|_| bad())?;
                let from = word()?;
                let from_seq = if from == "-" {
                    None
                } else {
                    Some(number(from)?)
                };
                let recover_us = number(word()?)?;
                Line::Ready {
                    job,
                    decision,
                    attempt,
                    from_seq,
                    recover_us,
                }
            }
            "restart" => Line::Restart {
                job,
                reference_seq: number(word()?)?,
            },
            "skipped" => Line::Skipped { job },
            "page" => Line::Page {
                job,
                records: number(word()?)?,
                last: word()? == "last",
            },
            "saved" => Line::Saved {
                job,
                seq: number(word()?)?,
                processed: number(word()?)?,
                trigger: word()?.to_owned(),
            },
            "rate_limited" => Line::RateLimited {
                job,
                saved: word()? == "true",
            },
            "failed" => {
                let first = word()?.to_owned();
                let rest: Vec<&str> = words.collect();
                let error = std::iter::once(first.as_str())
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join(" ");
                Line::Failed { job, error }
            }
            "done" => Line::Done {
                job,
                processed: number(word()?)?,
            },
            _ => return Err(bad()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_parses_back() {
        let lines = [
            Line::Open {
                open_us: 120,
                recovery_us: 40,
                findings: 1,
                discarded_bytes: 4096,
            },
            Line::Ready {
                job: DemoJob::Github,
                decision: "resume".into(),
                attempt: 2,
                from_seq: Some(17),
                recover_us: 900,
            },
            Line::Ready {
                job: DemoJob::Jira,
                decision: "fresh_start".into(),
                attempt: 1,
                from_seq: None,
                recover_us: 5,
            },
            Line::Restart {
                job: DemoJob::Jira,
                reference_seq: 9,
            },
            Line::Skipped {
                job: DemoJob::Github,
            },
            Line::Page {
                job: DemoJob::Jira,
                records: 50,
                last: false,
            },
            Line::Page {
                job: DemoJob::Github,
                records: 7,
                last: true,
            },
            Line::Saved {
                job: DemoJob::Github,
                seq: 3,
                processed: 75,
                trigger: "batch_completed".into(),
            },
            Line::RateLimited {
                job: DemoJob::Github,
                saved: true,
            },
            Line::Failed {
                job: DemoJob::Jira,
                error: "HTTP 502 Bad Gateway on request 4 and more words".into(),
            },
            Line::Done {
                job: DemoJob::Jira,
                processed: 400,
            },
        ];
        for line in lines {
            assert_eq!(line.to_string().parse::<Line>(), Ok(line.clone()), "{line}");
        }
        assert!("page nobody 3".parse::<Line>().is_err());
        assert!("".parse::<Line>().is_err());
    }
}
