//! `intake bench` end to end, small: every run, the mix, and `--compare-with` (the same
//! executable as the "other", two rounds), against the local RabbitMQ and PostgreSQL. Checks the
//! report's shape and its exactly-once check, never a speed.

use serde_json::Value;

#[tokio::test]
async fn a_small_bench_with_a_comparison_reports_every_run_and_cleans_up() {
    let exe = env!("CARGO_BIN_EXE_intake");
    let out = tokio::process::Command::new(exe)
        .args(["bench", "--messages", "300", "--slow-messages", "30", "--mix-messages", "120", "--scenarios", "mix"])
        .args(["--latency-secs", "1", "--json", "--compare-with", exe, "--rounds", "2"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
        .output()
        .await
        .expect("run intake bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "intake bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");

    for run in ["fastBaseline", "ackEachBaseline", "storeOnlyBaseline", "naive", "intake", "intake2Workers", "mix"] {
        let r = &report["runs"][run];
        assert!(r["rate"].as_f64().is_some_and(|v| v > 0.0), "{run}: {r}");
        assert!(r["cpuStealShare"].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{run}: {r}");
    }
    assert_eq!(report["runs"]["storeOnlyBaseline"]["applied"], 300, "the store-only baseline stores each message once");
    assert_eq!(report["check"]["exactlyOnce"], true);
    assert_eq!(report["check"]["rows"], report["check"]["rowsExpected"]);

    let pairs = report["compared"]["pairs"].as_array().expect("the comparison's pairs");
    let names: Vec<&str> = pairs.iter().map(|p| p["other"]["name"].as_str().unwrap()).collect();
    let round = ["intake, 1 worker [other]", "intake, 2 workers [other]", "mix (real-size traffic, 1 worker) [other]"];
    assert_eq!(names, [round, round].concat(), "two rounds of the same pairs");
    let by_run = report["compared"]["byRun"].as_array().expect("the ratios by run");
    assert_eq!(by_run.len(), 3, "{by_run:?}");
    for r in by_run {
        let ratios = r["thisOverOther"].as_array().expect("ratios");
        assert_eq!(ratios.len(), 2, "one ratio per round: {r}");
        let (a, b) = (ratios[0].as_f64().unwrap(), ratios[1].as_f64().unwrap());
        let median = r["median"].as_f64().unwrap();
        assert!((median - (a + b) / 2.0).abs() < 1e-9, "the median of two is their mean: {r}");
    }
    for p in pairs {
        assert_eq!(p["this"]["messages"], p["other"]["messages"], "the same backlog: {p}");
        assert!(p["thisOverOther"].as_f64().is_some_and(|v| v > 0.0));
        assert_eq!(p["other"]["applied"], p["other"]["messages"], "every message stored once: {p}");
    }

    // Both databases are gone.
    let id = report["bench"].as_str().unwrap();
    let pool = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1")
        .bind(format!("intake_bench_{id}%"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "bench databases left behind");
}
