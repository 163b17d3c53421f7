//! From the rounds' samples to the table and the JSON document: medians over the rounds, and
//! ratios taken within each round (both rows measured minutes apart at most) before their
//! median is taken, so that a slow round for the whole machine cancels out.

use serde::Serialize;

use crate::lineup::{Contender, Target};
use crate::measure::Sample;

#[derive(Debug, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub peers: Vec<Row>,
    pub targets: Vec<TargetResult>,
}

#[derive(Debug, Serialize)]
pub struct Settings {
    pub rounds: usize,
    pub seconds_per_run: f64,
    pub writers: usize,
    pub payload_bytes: usize,
    pub dir: String,
    pub file_system: String,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub id: String,
    pub peer: String,
    pub writers: usize,
    pub durable: bool,
    /// Medians over the rounds.
    pub saves_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub saves_per_sync: Option<f64>,
    pub floor: String,
    /// The median over the rounds of this row's rate divided by its floor's rate in the same
    /// round.
    pub ratio_to_floor: Option<f64>,
    pub saves_per_sec_per_round: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct TargetResult {
    /// "numerator / denominator", two row ids.
    pub what: String,
    pub at_least: f64,
    /// None when a row was not run (PostgreSQL without `CAIRN_PG_URL`).
    pub measured: Option<f64>,
    pub met: Option<bool>,
}

/// `samples[c][r]` is contender `c`'s sample in round `r`.
pub fn rows(contenders: &[Contender], samples: &[Vec<Sample>]) -> Vec<Row> {
    let ids: Vec<String> = contenders.iter().map(Contender::id).collect();
    let rates: Vec<Vec<f64>> = samples
        .iter()
        .map(|runs| runs.iter().map(Sample::saves_per_sec).collect())
        .collect();
    contenders
        .iter()
        .zip(samples)
        .zip(&rates)
        .map(|((contender, runs), own)| {
            let floor = contender.floor();
            let floor_rates = ids
                .iter()
                .position(|id| *id == floor)
                .and_then(|i| rates.get(i));
            Row {
                id: contender.id(),
                peer: contender.label.to_owned(),
                writers: contender.writers,
                durable: contender.durable,
                saves_per_sec: median(own.clone()).unwrap_or(0.0),
                p50_us: median_us(runs, |sample| sample.p50.as_secs_f64()),
                p99_us: median_us(runs, |sample| sample.p99.as_secs_f64()),
                saves_per_sync: median(runs.iter().filter_map(Sample::saves_per_sync).collect()),
                floor,
                ratio_to_floor: floor_rates.and_then(|floor_rates| round_ratio(own, floor_rates)),
                saves_per_sec_per_round: own.clone(),
            }
        })
        .collect()
}

pub fn target_results(targets: &[Target], rows: &[Row]) -> Vec<TargetResult> {
    let rates = |id: &str| {
        rows.iter()
            .find(|row| row.id == id)
            .map(|row| &row.saves_per_sec_per_round)
    };
    targets
        .iter()
        .map(|target| {
            let measured = match (rates(&target.numerator), rates(&target.denominator)) {
                (Some(numerator), Some(denominator)) => round_ratio(numerator, denominator),
                _ => None,
            };
            TargetResult {
                what: format!("{} / {}", target.numerator, target.denominator),
                at_least: target.at_least,
                measured,
                met: measured.map(|ratio| ratio >= target.at_least),
            }
        })
        .collect()
}

/// The median over the rounds of `numerator[r] / denominator[r]`.
fn round_ratio(numerator: &[f64], denominator: &[f64]) -> Option<f64> {
    let ratios = numerator
        .iter()
        .zip(denominator)
        .filter(|(_, d)| **d > 0.0)
        .map(|(n, d)| n / d)
        .collect();
    median(ratios)
}

fn median_us(runs: &[Sample], seconds: impl Fn(&Sample) -> f64) -> f64 {
    median(runs.iter().map(|sample| seconds(sample) * 1e6).collect()).unwrap_or(0.0)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => values.get(mid).copied(),
        _ => Some((values.get(mid - 1)? + values.get(mid)?) / 2.0),
    }
}

impl Report {
    /// The human-readable form: the settings, the rows, the targets.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "peers: {} round(s), each peer {:.1} s per round, interleaved; a {}-byte JSON \
             checkpoint per save; files in {} ({})\n\
             rates and latencies: medians over the rounds; ratios: median of the per-round \
             ratios\n\n",
            s.rounds, s.seconds_per_run, s.payload_bytes, s.dir, s.file_system
        );
        out.push_str(&columns([
            "row",
            "durable",
            "saves/s",
            "p50 µs",
            "p99 µs",
            "saves/sync",
            "ratio",
            "to floor",
            "peer",
        ]));
        for row in &self.peers {
            out.push_str(&row_line(row));
        }
        out.push_str(&format!(
            "\n{:<38} {:>9} {:>8}  {}\n",
            "target", "measured", "target", "result"
        ));
        for target in &self.targets {
            out.push_str(&target_line(target));
        }
        out
    }
}

/// One line of the rows' table; the same widths for the header and every row.
fn columns(cells: [&str; 9]) -> String {
    let [id, durable, rate, p50, p99, per_sync, ratio, floor, peer] = cells;
    format!(
        "{id:<22} {durable:>7} {rate:>11} {p50:>9} {p99:>9} {per_sync:>10} {ratio:>7}  \
         {floor:<22} {peer}\n"
    )
}

fn row_line(row: &Row) -> String {
    columns([
        &row.id,
        if row.durable { "yes" } else { "no" },
        &thousands(row.saves_per_sec),
        &format!("{:.1}", row.p50_us),
        &format!("{:.1}", row.p99_us),
        &row.saves_per_sync.map_or("-".into(), |n| format!("{n:.1}")),
        &row.ratio_to_floor
            .map_or("-".into(), |r| format!("{r:.2}x")),
        &row.floor,
        &row.peer,
    ])
}

fn target_line(target: &TargetResult) -> String {
    let (measured, result) = match (target.measured, target.met) {
        (Some(ratio), Some(met)) => (format!("{ratio:.2}x"), if met { "met" } else { "not met" }),
        _ => ("-".into(), "not measured"),
    };
    format!(
        "{:<38} {:>9} {:>8}  {}\n",
        target.what,
        measured,
        format!(">= {}x", target.at_least),
        result
    )
}

/// A rate with thousands separators, no decimals.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}
