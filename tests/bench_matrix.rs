//! benches/summarize-matrix.py, which judges a benches/run-matrix.sh directory against the
//! speed targets: fed reports the load tool really produced (small runs against a real
//! server), edited to put one target over or under its line, it must pass, fail, and say which.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use tickfan::loadgen::{run, Scenario};

/// One real report of a data scenario and one of `connect`, as `tickfan bench --json` writes
/// them, so the script is held to the field names the tool really uses.
fn real_reports() -> &'static (Value, Value) {
    static REPORTS: OnceLock<(Value, Value)> = OnceLock::new();
    REPORTS.get_or_init(|| {
        let (_server, target) = common::start_for_load(Some(std::process::id()));
        let mut light = Scenario::preset("light").unwrap();
        light.subscribers = 40;
        light.duration = Duration::from_millis(1000);
        let mut connect = Scenario::preset("connect").unwrap();
        connect.subscribers = 50;
        let data = run(&light, &target, false).unwrap();
        let conn = run(&connect, &target, false).unwrap();
        (
            serde_json::to_value(&data).unwrap(),
            serde_json::to_value(&conn).unwrap(),
        )
    })
}

/// `base` with fields replaced; a key `a.b` sets field `b` of object `a`.
fn with(base: &Value, edits: &[(&str, Value)]) -> Value {
    let mut v = base.clone();
    for (key, value) in edits {
        let slot = match key.split_once('.') {
            Some((outer, inner)) => &mut v[outer][inner],
            None => &mut v[*key],
        };
        assert!(
            !slot.is_null(),
            "the load tool's report has no {key}: {base}"
        );
        *slot = value.clone();
    }
    v
}

/// A matrix directory as run-matrix.sh leaves it, removed at the end.
struct Matrix {
    dir: PathBuf,
}

impl Matrix {
    /// Three rounds within every target: light and moderate at 1.0x the baseline and 0.2 µs
    /// user, heavy p99 2 ms, broadcast p99 40 ms, connect 20,000/s, p99 20 ms, 970 bytes.
    fn within_targets(name: &str) -> Matrix {
        let dir =
            std::env::temp_dir().join(format!("tickfan-matrix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let m = Matrix { dir };
        let (data, conn) = real_reports();
        let cpu = |user: f64, total: f64| {
            with(
                data,
                &[
                    ("userUsPerDelivery", json!(user)),
                    ("totalUsPerDelivery", json!(total)),
                ],
            )
        };
        for round in 1..=3 {
            for s in ["light", "moderate"] {
                m.put(s, round, "tickfan", &cpu(0.2, 5.0));
                m.put(s, round, "baseline", &cpu(0.25, 5.0));
            }
            m.put(
                "heavy",
                round,
                "tickfan",
                &with(data, &[("latencyMs.p99", json!(2.0))]),
            );
            m.put("heavy", round, "baseline", data);
            m.put(
                "broadcast",
                round,
                "tickfan",
                &with(data, &[("latencyMs.p99", json!(40.0))]),
            );
            let c = with(
                conn,
                &[
                    ("handshakesPerSec", json!(20_000.0)),
                    ("handshakeMs.p99", json!(20.0)),
                    ("rssPerConnectionBytes", json!(970.0)),
                ],
            );
            m.put("connect", round, "tickfan", &c);
        }
        m
    }

    fn put(&self, scenario: &str, round: u32, who: &str, report: &Value) {
        let path = self.dir.join(format!("{scenario}-{round}-{who}.json"));
        std::fs::write(path, serde_json::to_string_pretty(report).unwrap()).unwrap();
    }

    /// Replaces one field of one report already written.
    fn edit(&self, scenario: &str, round: u32, who: &str, edits: &[(&str, Value)]) {
        let path = self.dir.join(format!("{scenario}-{round}-{who}.json"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        self.put(scenario, round, who, &with(&v, edits));
    }

    /// The script's verdict (exit status 0) and what it printed.
    fn summarize(&self, extra: &[&str]) -> (bool, String) {
        common::external::ensure_packages(&[("python3", "python3")]);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/summarize-matrix.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&self.dir)
            .args(extra)
            .output()
            .expect("run python3");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.is_empty(), "the script failed: {stderr}");
        let code = out.status.code();
        assert!(matches!(code, Some(0 | 1)), "exit {code:?}: {stderr}");
        (
            code == Some(0),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for Matrix {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The verdict line of `target` (one of the last lines, "  met    ..." or "  MISSED ...").
fn verdict<'a>(out: &'a str, target: &str) -> &'a str {
    out.lines()
        .filter(|l| l.starts_with("  met ") || l.starts_with("  MISSED "))
        .find(|l| l.contains(target))
        .unwrap_or_else(|| panic!("no verdict for {target}:\n{out}"))
}

/// Whether the script says `target` was met.
fn met(out: &str, target: &str) -> bool {
    verdict(out, target).starts_with("  met ")
}

#[test]
fn a_matrix_within_every_target_passes() {
    let m = Matrix::within_targets("pass");
    let (ok, out) = m.summarize(&[]);
    assert!(ok, "{out}");
    let met_lines = out.lines().filter(|l| l.starts_with("  met ")).count();
    assert_eq!(met_lines, 9, "{out}");
    assert!(!out.contains("MISSED"), "{out}");
    assert!(
        verdict(&out, "light: total CPU").contains("median 1.00x"),
        "{out}"
    );
    let (ok, md) = m.summarize(&["--markdown"]);
    assert!(ok);
    assert!(
        md.contains("| heavy: zero loss, p99 < 10 ms at 400k deliveries/s | 2.00, 2.00, 2.00 (3 of 3 within) | 2.00 ms | yes |"),
        "{md}"
    );
}

#[test]
fn the_median_decides_not_the_worst_run() {
    let m = Matrix::within_targets("median");
    // One light run at 1.2x the baseline beside it: the median stays at 1.0x.
    m.edit("light", 2, "tickfan", &[("totalUsPerDelivery", json!(6.0))]);
    let (ok, out) = m.summarize(&[]);
    assert!(ok, "{out}");
    assert!(met(&out, "light: total CPU"), "{out}");
    let line = verdict(&out, "light: total CPU");
    assert!(line.contains("1.00, 1.20, 1.00 (2 of 3 within)"), "{line}");
}

#[test]
fn a_median_over_the_line_fails_and_names_the_target() {
    let m = Matrix::within_targets("over");
    m.edit("light", 1, "tickfan", &[("totalUsPerDelivery", json!(6.0))]);
    m.edit(
        "light",
        3,
        "tickfan",
        &[("totalUsPerDelivery", json!(5.75))],
    );
    m.edit("broadcast", 1, "tickfan", &[("latencyMs.p99", json!(70.0))]);
    m.edit("broadcast", 2, "tickfan", &[("latencyMs.p99", json!(61.0))]);
    let (ok, out) = m.summarize(&[]);
    assert!(!ok, "{out}");
    assert!(!met(&out, "light: total CPU"), "{out}");
    assert!(
        verdict(&out, "light: total CPU").contains("median 1.15x"),
        "{out}"
    );
    assert!(!met(&out, "broadcast, 2 workers"), "{out}");
    assert!(met(&out, "light: user CPU"), "{out}");
}

#[test]
fn one_lost_delivery_or_missing_connection_fails_its_scenario() {
    let m = Matrix::within_targets("loss");
    m.edit("heavy", 3, "tickfan", &[("lost", json!(1))]);
    m.edit("connect", 1, "tickfan", &[("connected", json!(49))]);
    let (ok, out) = m.summarize(&[]);
    assert!(!ok, "{out}");
    // p99 is within the line in every run: the loss alone fails heavy.
    assert!(!met(&out, "heavy: zero loss"), "{out}");
    assert!(!met(&out, ">= 5,000 handshakes"), "{out}");
    assert!(met(&out, "moderate: total CPU"), "{out}");
}
