//! `canteen-lab compare`: the simulator's distribution over many seeds beside the lab's over a
//! few real runs, for each fault's detection and recovery, the convergence after the heal, and
//! the requests that failed. A lab median outside the simulator's range says the model (or the
//! code) is wrong somewhere, and where to look.

use std::fmt::Write as _;
use std::path::Path;

use canteen_sim::report::Distribution;
use serde_json::Value;

/// One fault's figures in a run: its description, recovery and detection (crashes).
pub type FaultFigures = (String, Option<f64>, Option<f64>);

/// What the comparison keeps of one run's JSON report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Per fault, in timeline order: description, recovery, detection (crashes).
    pub faults: Vec<FaultFigures>,
    /// Convergence after the heal, when the run had faults.
    pub converge: Option<f64>,
    /// Requests that failed, and all requests.
    pub failed: (u64, u64),
}

impl Figures {
    /// The figures of a report (the simulator's JSON, or the lab's).
    pub fn of(report: &Value) -> Figures {
        let faults = report["recoveries"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| {
                        (
                            r["fault"].as_str().unwrap_or_default().to_owned(),
                            r["recovery_s"].as_f64(),
                            r["detected_s"].as_f64(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Figures {
            faults,
            converge: report["converge_s"].as_f64(),
            failed: (
                report["requests"]["failed"].as_u64().unwrap_or(0),
                report["requests"]["total"].as_u64().unwrap_or(0),
            ),
        }
    }
}

/// Runs the simulator binary `sim` on `file` at `seed`; its JSON report.
pub fn sim_report(sim: &Path, file: &Path, seed: u64) -> Result<Value, String> {
    let out = std::process::Command::new(sim)
        .arg("run")
        .arg(file)
        .args(["--seed", &seed.to_string(), "--json"])
        .output()
        .map_err(|e| format!("{}: {e}", sim.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The options line comes first, then the report.
    let json = text.find("\n{").map(|i| &text[i + 1..]).ok_or_else(|| {
        format!(
            "{} run {} --seed {seed}: no report: {}",
            sim.display(),
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    serde_json::from_str(json).map_err(|e| format!("{}: the report does not decode: {e}", sim.display()))
}

/// One row of the table: a figure's simulated distribution and real values.
fn row(out: &mut String, figure: &str, sim: &[Option<f64>], lab: &[Option<f64>], unit: &str) {
    let show = |v: &Option<f64>| v.map_or("never".to_owned(), |v| format!("{v:.1}"));
    let sim_d = Distribution::of(sim);
    let lab_d = Distribution::of(lab);
    let sim_min = sim.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    let sim_text = sim_d.as_ref().map_or("never".to_owned(), |d| {
        let never = if d.never > 0 { format!(" (never in {})", d.never) } else { String::new() };
        format!("{:.1} / {:.1} / {:.1} / {:.1}{never}", d.p50, d.p90, d.p99, d.max)
    });
    let lab_values: Vec<String> = lab.iter().map(show).collect();
    let verdict = match (&sim_d, &lab_d) {
        (Some(s), Some(l)) if l.p50 > s.max => format!("above (lab median {:.1} > sim max)", l.p50),
        (Some(_), Some(l)) if l.p50 < sim_min => format!("below (lab median {:.1} < sim min {sim_min:.1})", l.p50),
        (Some(_), Some(_)) => "inside".to_owned(),
        (None, None) => "neither".to_owned(),
        _ => "differs: one never happened".to_owned(),
    };
    let _ = writeln!(out, "| {figure} ({unit}) | {sim_text} | {} | {verdict} |", lab_values.join(", "));
}

/// The comparison table (Markdown) of `sim` runs and `lab` runs of scenario `file`.
pub fn table(file: &str, sim: &[Figures], lab: &[Figures]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: simulator over {} seeds, lab over {} runs", sim.len(), lab.len());
    let _ = writeln!(
        out,
        "| figure | simulator p50 / p90 / p99 / max | lab, each run | lab median against the simulator |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let faults = sim.first().map(|f| f.faults.clone()).unwrap_or_default();
    for (k, (fault, _, _)) in faults.iter().enumerate() {
        let pick = |runs: &[Figures], which: fn(&FaultFigures) -> Option<f64>| {
            runs.iter().map(|r| r.faults.get(k).and_then(which)).collect::<Vec<_>>()
        };
        let (sim_d, lab_d) = (pick(sim, |f| f.2), pick(lab, |f| f.2));
        if sim_d.iter().any(Option::is_some) || lab_d.iter().any(Option::is_some) {
            row(&mut out, &format!("{fault}: detected"), &sim_d, &lab_d, "s");
        }
        row(&mut out, &format!("{fault}: recovered"), &pick(sim, |f| f.1), &pick(lab, |f| f.1), "s");
    }
    if !faults.is_empty() {
        let converge = |runs: &[Figures]| runs.iter().map(|r| r.converge).collect::<Vec<_>>();
        row(&mut out, "converged after the heal", &converge(sim), &converge(lab), "s");
    }
    let failed = |runs: &[Figures]| runs.iter().map(|r| Some(r.failed.0 as f64)).collect::<Vec<_>>();
    row(&mut out, "requests failed", &failed(sim), &failed(lab), "count");
    let total = |runs: &[Figures]| runs.iter().map(|r| r.failed.1).sum::<u64>() / runs.len().max(1) as u64;
    let _ = writeln!(out, "requests per run: simulator {} on average, lab {}", total(sim), total(lab));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(recovery: f64, detected: Option<f64>, converge: Option<f64>, failed: u64) -> Value {
        serde_json::json!({
            "recoveries": [{ "fault": "crash-node 2", "at_s": 30.0, "recovery_s": recovery, "detected_s": detected }],
            "converge_s": converge,
            "requests": { "failed": failed, "total": 1000 },
        })
    }

    #[test]
    fn figures_come_from_the_reports_json() {
        let f = Figures::of(&report(2.5, Some(1.5), Some(3.0), 7));
        assert_eq!(f.faults, vec![("crash-node 2".to_owned(), Some(2.5), Some(1.5))]);
        assert_eq!(f.converge, Some(3.0));
        assert_eq!(f.failed, (7, 1000));
    }

    #[test]
    fn a_lab_median_beyond_the_simulators_range_is_called_out() {
        let sim: Vec<Figures> =
            (0..10).map(|i| Figures::of(&report(2.0 + i as f64 / 10.0, Some(1.0), Some(2.0), 0))).collect();
        let inside: Vec<Figures> = (0..3).map(|_| Figures::of(&report(2.5, Some(1.0), Some(2.0), 0))).collect();
        let above: Vec<Figures> = (0..3).map(|_| Figures::of(&report(9.0, Some(1.0), Some(2.0), 0))).collect();
        let t = table("f.toml", &sim, &inside);
        assert!(t.contains("crash-node 2: recovered (s)") && t.contains("| inside |"), "{t}");
        let t = table("f.toml", &sim, &above);
        assert!(t.contains("above (lab median 9.0 > sim max)"), "{t}");
    }
}
