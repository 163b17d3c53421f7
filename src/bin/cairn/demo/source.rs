//! The demo's synthetic source: a GitHub-like API (repositories with paged pull requests and
//! opaque cursors) and a Jira-like API (projects with paged issues), both under a rate limit
//! that forces pauses. Everything is derived from the seed, so the parent process knows every
//! record the extractor must deliver without asking the extractor.

use std::time::Duration;

/// Pull requests per page, as GitHub's GraphQL `first: 25`.
pub const PR_PAGE_SIZE: u64 = 25;
/// Issues per page, as Jira's `maxResults=50`.
pub const ISSUE_PAGE_SIZE: u64 = 50;
/// Requests allowed per rate-limit window; the next one is refused until the window resets.
pub const REQUESTS_PER_WINDOW: u64 = 8;
/// How long a rate-limit window takes to reset (scaled down from GitHub's hour).
pub const RATE_LIMIT_RESET: Duration = Duration::from_millis(3);
/// Repositories and projects per unit of `--scale`.
const REPOS_PER_SCALE: u64 = 4;
const PROJECTS_PER_SCALE: u64 = 3;
/// The largest `--scale`: 400 repositories and 300 projects, a few hundred thousand records.
pub const MAX_SCALE: u32 = 100;

const PROJECT_KEYS: [&str; 8] = ["CORE", "OPS", "DATA", "WEB", "MOB", "SEC", "INFRA", "API"];
const WORDS: [&str; 12] = [
    "fix", "cache", "retry", "parser", "login", "index", "report", "deploy", "schema", "flaky",
    "timeout", "export",
];
const AUTHORS: [&str; 6] = ["ada", "brian", "chen", "dara", "emeka", "fatima"];
const STATUSES: [&str; 4] = ["To Do", "In Progress", "In Review", "Done"];

/// SplitMix64: a tiny, well-mixed generator. Enough for a demo; no dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// A number in `low..=high` (`low` when the range is empty).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        low + self.next_u64() % (high - low + 1)
    }
}

/// The SplitMix64 finalizer: a bijective scramble of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stable hash of a seed and some text (FNV-1a, then mixed), for per-record details.
fn hash(seed: u64, text: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for byte in text.bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn pick<'a>(list: &[&'a str], n: u64) -> &'a str {
    let len = list.len() as u64;
    list.get((n % len) as usize).copied().unwrap_or("")
}

/// One repository: its name and the numbers of its pull requests, oldest first.
#[derive(Debug, Clone)]
pub struct Repo {
    pub name: String,
    pub pr_numbers: Vec<u64>,
}

/// One Jira project: its key and its issue count (issues are `KEY-1` to `KEY-n`).
#[derive(Debug, Clone)]
pub struct Project {
    pub key: String,
    pub issue_count: u64,
}

/// Everything the source holds, derived from `(seed, scale)`.
#[derive(Debug, Clone)]
pub struct Source {
    seed: u64,
    pub repos: Vec<Repo>,
    pub projects: Vec<Project>,
}

/// One record the extractor must deliver: `(unit, item)` within a job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceRecord {
    pub unit: String,
    pub item: String,
}

impl Source {
    pub fn new(seed: u64, scale: u32) -> Source {
        let mut rng = Rng::new(seed);
        let scale = u64::from(scale.clamp(1, MAX_SCALE));
        let repos = (0..REPOS_PER_SCALE * scale)
            .map(|i| {
                let count = rng.range(30, 140);
                let mut number = rng.range(1, 500);
                let pr_numbers = (0..count)
                    .map(|_| {
                        // Numbers have gaps, as issues share GitHub's numbering.
                        number += rng.range(1, 3);
                        number
                    })
                    .collect();
                Repo {
                    name: format!(
                        "synth-{seed_tag}/{word}-{i}",
                        seed_tag = seed % 1000,
                        word = pick(&WORDS, rng.next_u64())
                    ),
                    pr_numbers,
                }
            })
            .collect();
        let projects = (0..PROJECTS_PER_SCALE * scale)
            .map(|i| {
                let base = pick(&PROJECT_KEYS, i);
                let round = i / PROJECT_KEYS.len() as u64;
                let key = if round == 0 {
                    base.to_owned()
                } else {
                    format!("{base}{round}")
                };
                Project {
                    key,
                    issue_count: rng.range(60, 220),
                }
            })
            .collect();
        Source {
            seed,
            repos,
            projects,
        }
    }

    pub fn pull_request_count(&self) -> u64 {
        self.repos.iter().map(|r| r.pr_numbers.len() as u64).sum()
    }

    pub fn issue_count(&self) -> u64 {
        self.projects.iter().map(|p| p.issue_count).sum()
    }

    /// Pages a complete Jira extraction fetches.
    pub fn issue_pages(&self) -> u64 {
        self.projects
            .iter()
            .map(|p| p.issue_count.div_ceil(ISSUE_PAGE_SIZE).max(1))
            .sum()
    }

    /// Every pull request, as `(repository, number)`.
    pub fn pull_request_records(&self) -> Vec<SourceRecord> {
        self.repos
            .iter()
            .flat_map(|repo| {
                repo.pr_numbers.iter().map(|n| SourceRecord {
                    unit: repo.name.clone(),
                    item: n.to_string(),
                })
            })
            .collect()
    }

    /// Every issue, as `(project, issue key)`.
    pub fn issue_records(&self) -> Vec<SourceRecord> {
        self.projects
            .iter()
            .flat_map(|project| {
                (1..=project.issue_count).map(|n| SourceRecord {
                    unit: project.key.clone(),
                    item: format!("{}-{n}", project.key),
                })
            })
            .collect()
    }
}

/// A pull request as the API returns it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    pub author: String,
}

/// A page of pull requests and the cursor of the next one (`None` on the last page).
#[derive(Debug, Clone)]
pub struct PullRequestPage {
    pub items: Vec<PullRequest>,
    pub next_cursor: Option<String>,
}

/// An issue as the API returns it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issue {
    pub key: String,
    pub summary: String,
    pub status: String,
}

/// A page of issues, Jira style: offset paging with the total.
#[derive(Debug, Clone)]
pub struct IssuePage {
    pub items: Vec<Issue>,
    pub total: u64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// Too many requests: wait `reset_after`, then ask again.
    RateLimited { reset_after: Duration },
    /// A transient server error (injected by the demo): a retry later succeeds.
    Unavailable { status: u16, request: u64 },
    /// The request itself was wrong (an unknown repository, a cursor from elsewhere).
    BadRequest { reason: String },
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::RateLimited { reset_after } => {
                write!(f, "rate limited for {reset_after:?}")
            }
            ApiError::Unavailable { status, request } => {
                write!(f, "HTTP {status} Bad Gateway on request {request}")
            }
            ApiError::BadRequest { reason } => write!(f, "HTTP 400: {reason}"),
        }
    }
}

/// A client session with the synthetic API: it counts requests for the rate limit, and can
/// fail one request on purpose.
#[derive(Debug)]
pub struct Api<'a> {
    source: &'a Source,
    requests: u64,
    in_window: u64,
    fail_at_request: Option<u64>,
}

impl<'a> Api<'a> {
    pub fn new(source: &'a Source, fail_at_request: Option<u64>) -> Api<'a> {
        Api {
            source,
            requests: 0,
            in_window: 0,
            fail_at_request,
        }
    }

    /// Counts a request against the rate limit and the injected failure.
    fn request(&mut self) -> Result<(), ApiError> {
        if self.in_window == REQUESTS_PER_WINDOW {
            // The caller is trusted to wait for the reset (the demo's client always does).
            self.in_window = 0;
            return Err(ApiError::RateLimited {
                reset_after: RATE_LIMIT_RESET,
            });
        }
        self.in_window += 1;
        self.requests += 1;
        if self.fail_at_request == Some(self.requests) {
            return Err(ApiError::Unavailable {
                status: 502,
                request: self.requests,
            });
        }
        Ok(())
    }

    /// `GET /orgs/{org}/repos`: every repository name.
    pub fn repositories(&mut self) -> Result<Vec<String>, ApiError> {
        self.request()?;
        Ok(self.source.repos.iter().map(|r| r.name.clone()).collect())
    }

    /// A page of a repository's pull requests, from `cursor` (`None`: the first page).
    pub fn pull_requests(
        &mut self,
        repo: &str,
        cursor: Option<&str>,
    ) -> Result<PullRequestPage, ApiError> {
        self.request()?;
        let Some(found) = self.source.repos.iter().find(|r| r.name == repo) else {
            return Err(ApiError::BadRequest {
                reason: format!("no repository {repo:?}"),
            });
        };
        let offset = match cursor {
            None => 0,
            Some(cursor) => decode_cursor(repo, cursor)?,
        };
        let end = (offset + PR_PAGE_SIZE).min(found.pr_numbers.len() as u64);
        let numbers = found
            .pr_numbers
            .get(offset as usize..end as usize)
            .unwrap_or_default();
        let items = numbers
            .iter()
            .map(|&number| {
                let h = hash(self.source.seed, &format!("{repo}#{number}"));
                PullRequest {
                    number,
                    title: format!("{} {}", pick(&WORDS, h), pick(&WORDS, h >> 8)),
                    author: pick(&AUTHORS, h >> 16).to_owned(),
                }
            })
            .collect();
        let next_cursor = (end < found.pr_numbers.len() as u64).then(|| encode_cursor(repo, end));
        Ok(PullRequestPage { items, next_cursor })
    }

    /// `GET /rest/api/2/project`: every project key.
    pub fn projects(&mut self) -> Result<Vec<String>, ApiError> {
        self.request()?;
        Ok(self.source.projects.iter().map(|p| p.key.clone()).collect())
    }

    /// `GET /rest/api/2/search?jql=project={key}&startAt={start_at}`.
    pub fn issues(&mut self, project: &str, start_at: u64) -> Result<IssuePage, ApiError> {
        self.request()?;
        let Some(found) = self.source.projects.iter().find(|p| p.key == project) else {
            return Err(ApiError::BadRequest {
                reason: format!("no project {project:?}"),
            });
        };
        let end = (start_at + ISSUE_PAGE_SIZE).min(found.issue_count);
        let items = (start_at + 1..=end)
            .map(|n| {
                let key = format!("{project}-{n}");
                let h = hash(self.source.seed, &key);
                Issue {
                    summary: format!("{} the {}", pick(&WORDS, h), pick(&WORDS, h >> 8)),
                    status: pick(&STATUSES, h >> 16).to_owned(),
                    key,
                }
            })
            .collect();
        Ok(IssuePage {
            items,
            total: found.issue_count,
        })
    }
}

/// An opaque cursor, as GitHub hands out: base64 of `cursor:<repo>:<offset>`.
fn encode_cursor(repo: &str, offset: u64) -> String {
    base64_encode(format!("cursor:{repo}:{offset}").as_bytes())
}

fn decode_cursor(repo: &str, cursor: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::BadRequest {
        reason: format!("invalid cursor {cursor:?} for {repo}"),
    };
    let text = base64_decode(cursor).ok_or_else(bad)?;
    let text = String::from_utf8(text).map_err(|_| bad())?;
    let rest = text
        .strip_prefix("cursor:")
        .and_then(|rest| rest.strip_prefix(repo))
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(bad)?;
    rest.parse().map_err(|_| bad())
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                // A 6-bit index: always inside the 64-letter alphabet.
                let letter = BASE64.get(((n >> (18 - 6 * i)) & 63) as usize);
                out.push(char::from(letter.copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let value = BASE64.iter().position(|&b| b == c)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// A short description of the source, for the summary.
pub fn describe(source: &Source) -> String {
    format!(
        "{} pull requests in {} repositories (GitHub), {} issues in {} projects (Jira)",
        source.pull_request_count(),
        source.repos.len(),
        source.issue_count(),
        source.projects.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_look_like_githubs() {
        assert_eq!(
            base64_encode(b"cursor:1673972800"),
            "Y3Vyc29yOjE2NzM5NzI4MDA="
        );
        for text in ["", "a", "ab", "abc", "cursor:synth/x-1:25"] {
            let encoded = base64_encode(text.as_bytes());
            assert_eq!(base64_decode(&encoded).as_deref(), Some(text.as_bytes()));
        }
        assert_eq!(decode_cursor("r", &encode_cursor("r", 50)), Ok(50));
        assert!(decode_cursor("other", &encode_cursor("r", 50)).is_err());
    }

    #[test]
    fn paging_walks_every_record_once_and_the_rate_limit_pauses() {
        let source = Source::new(7, 1);
        let mut api = Api::new(&source, None);
        let mut seen = Vec::new();
        let mut limited = 0;
        for repo in &source.repos {
            let mut cursor = None;
            loop {
                let page = match api.pull_requests(&repo.name, cursor.as_deref()) {
                    Ok(page) => page,
                    Err(ApiError::RateLimited { .. }) => {
                        limited += 1;
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                };
                seen.extend(page.items.iter().map(|pr| SourceRecord {
                    unit: repo.name.clone(),
                    item: pr.number.to_string(),
                }));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        assert_eq!(seen, source.pull_request_records());
        assert!(limited > 0);
    }

    #[test]
    fn the_source_is_deterministic() {
        let a = Source::new(3, 2);
        let b = Source::new(3, 2);
        assert_eq!(a.pull_request_records(), b.pull_request_records());
        assert_eq!(a.issue_records(), b.issue_records());
        assert_ne!(
            Source::new(4, 2).pull_request_records(),
            a.pull_request_records()
        );
    }
}
