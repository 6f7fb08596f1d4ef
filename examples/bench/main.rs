//! errands benchmarks, each beside a raw-SQLite baseline measured in the
//! same run.
//!
//! ```text
//! cargo run --release --example bench            # full set, < 10 min on 2 cores
//! cargo run --release --example bench -- --quick # small smoke run (asserts nothing about speed)
//! ```
//!
//! Prints a table (scenario, errands, baseline, ratio) and, last, one JSON
//! line with the headline figures.

mod baseline;
mod counts;
mod cpu;
mod postgres;
mod scenarios;

use std::time::Instant;

use clap::Parser;
use errands::Synchronous;

/// Command-line settings.
#[derive(Parser, Debug, Clone)]
#[command(about = "errands benchmarks beside a raw-SQLite baseline")]
pub struct Args {
    /// A small, fast run for CI: checks the scenarios work, proves no speed.
    #[arg(long)]
    quick: bool,
    /// Jobs in the drain and batch scenarios (default 1,000,000; quick 20,000).
    #[arg(long)]
    jobs: Option<usize>,
    /// Concurrency of the drain scenario.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `normal` or `full`: the synchronous mode of the headline run.
    #[arg(long, default_value = "normal")]
    synchronous: String,
    /// Skip the second pass with synchronous=FULL.
    #[arg(long)]
    no_full: bool,
    /// Skip the PostgreSQL scenarios (they need a server at ERRANDS_PG_URL).
    #[arg(long)]
    no_postgres: bool,
    /// Jobs in the PostgreSQL drain (default 100,000; quick 5,000).
    #[arg(long)]
    pg_jobs: Option<usize>,
}

/// What every scenario needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    pub synchronous: Synchronous,
}

impl Settings {
    pub fn synchronous_pragma(&self) -> &'static str {
        match self.synchronous {
            Synchronous::Full => "FULL",
            _ => "NORMAL",
        }
    }
}

struct Sizes {
    drain: usize,
    scale_small: usize,
    enqueue: usize,
    baseline_enqueue: usize,
    batch: usize,
    latency: usize,
    delayed: usize,
    mixed: usize,
    full: usize,
    counts: usize,
    serial: usize,
    cpu: usize,
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

/// Peak resident memory of this process so far, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

struct Table(Vec<[String; 4]>);

impl Table {
    fn row(&mut self, scenario: &str, errands: String, baseline: String, ratio: String) {
        println!("  {scenario:<44} {errands:>16} {baseline:>16} {ratio:>7}");
        self.0.push([scenario.into(), errands, baseline, ratio]);
    }
}

fn rate(x: f64) -> String {
    format!("{:.0}/s", x)
}

// The example's entry; `benches/throughput.rs` calls `main_entry` instead.
#[allow(dead_code)]
fn main() {
    main_entry();
}

/// Parses the command line and runs every scenario.
pub fn main_entry() {
    if let Ok(schema) = std::env::var(postgres::DRAIN_CHILD) {
        let concurrency = std::env::var("ERRANDS_BENCH_CONCURRENCY")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(64);
        postgres::drain_child(&schema, concurrency);
        return;
    }
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    let synchronous = match args.synchronous.as_str() {
        "full" => Synchronous::Full,
        "normal" => Synchronous::Normal,
        other => {
            eprintln!("--synchronous must be normal or full, not {other}");
            std::process::exit(2);
        }
    };
    let sizes = if args.quick {
        Sizes {
            drain: args.jobs.unwrap_or(20_000),
            scale_small: 2_000,
            enqueue: 4_000,
            baseline_enqueue: 1_000,
            batch: args.jobs.unwrap_or(20_000),
            latency: 500,
            delayed: 300,
            mixed: 5_000,
            full: 4_000,
            counts: 20_000,
            serial: 5_000,
            cpu: 500,
        }
    } else {
        Sizes {
            drain: args.jobs.unwrap_or(1_000_000),
            scale_small: 10_000,
            enqueue: 200_000,
            baseline_enqueue: 20_000,
            batch: args.jobs.unwrap_or(1_000_000),
            latency: 10_000,
            delayed: 10_000,
            mixed: 200_000,
            full: 100_000,
            counts: 1_000_000,
            serial: 100_000,
            cpu: 5_000,
        }
    };
    let settings = Settings { synchronous };
    let dir = tempfile::tempdir().expect("temp dir");
    let began = Instant::now();
    println!(
        "errands bench: {} cores, synchronous={}, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.synchronous_pragma(),
        if args.quick { "quick" } else { "full" }
    );
    println!(
        "  {:<44} {:>16} {:>16} {:>7}",
        "scenario", "errands", "raw SQLite", "ratio"
    );
    let mut table = Table(Vec::new());
    let system = actix_rt::System::new();

    // Drain first, so that peak RSS is the drain's with a million pending.
    let drain = system.block_on(scenarios::drain(
        dir.path(),
        &settings,
        sizes.drain,
        args.concurrency,
    ));
    let rss = peak_rss_mib();
    let (conn, _) = baseline::enqueue_batched(dir.path(), &settings, sizes.drain, 10_000);
    let drain_base = baseline::drain(&conn, args.concurrency);
    drop(conn);
    table.row(
        &format!(
            "drain {} jobs, concurrency {}",
            sizes.drain, args.concurrency
        ),
        rate(drain),
        rate(drain_base),
        format!("{:.2}x", drain / drain_base),
    );
    table.row(
        &format!("peak RSS with {} pending", sizes.drain),
        format!("{rss:.1} MiB"),
        "-".into(),
        "-".into(),
    );

    // The same drain with live control engaged (an override, a rate limit
    // that never binds): what the checks on the claim path cost. Plain and
    // controlled drains alternate, six of each on a fifth of the jobs, and
    // the medians are compared: this machine's speed drifts by more than
    // the 5% being measured between two runs taken minutes apart.
    let part = (sizes.drain / 5).max(1000);
    let (mut plain, mut controlled) = (Vec::new(), Vec::new());
    let (mut plain_cpu, mut controlled_cpu) = (Vec::new(), Vec::new());
    for round in 0..6 {
        // Each goes first in every other round, so drift cancels out.
        for with_knobs in [round % 2 == 0, round % 2 == 1] {
            let (rate, cpu) = if with_knobs {
                system.block_on(scenarios::drain_controlled(
                    dir.path(),
                    &settings,
                    part,
                    args.concurrency,
                ))
            } else {
                system.block_on(scenarios::drain_measured(
                    dir.path(),
                    &settings,
                    part,
                    args.concurrency,
                ))
            };
            if with_knobs {
                controlled.push(rate);
                controlled_cpu.push(cpu);
            } else {
                plain.push(rate);
                plain_cpu.push(cpu);
            }
        }
    }
    let (plain, controlled) = (median(&mut plain), median(&mut controlled));
    let (plain_cpu, controlled_cpu) = (median(&mut plain_cpu), median(&mut controlled_cpu));
    table.row(
        &format!("drain {part} jobs, override + rate limit (median of 6)"),
        rate(controlled),
        format!("{} (no knobs, median of 6)", rate(plain)),
        format!("{:.2}x", controlled / plain),
    );
    table.row(
        "  the same: CPU time per job, all threads",
        format!("{controlled_cpu:.2} µs"),
        format!("{plain_cpu:.2} µs (no knobs)"),
        format!("{:.2}x", plain_cpu / controlled_cpu),
    );

    let small = system.block_on(scenarios::drain(
        dir.path(),
        &settings,
        sizes.scale_small,
        args.concurrency,
    ));
    table.row(
        &format!(
            "scale: drain {} vs {} pending",
            sizes.drain, sizes.scale_small
        ),
        rate(drain),
        format!("{} (errands)", rate(small)),
        format!("{:.2}x", drain / small),
    );

    let cores_used = system.block_on(cpu::cpu(dir.path(), &settings, sizes.cpu));
    table.row(
        &format!("cpu: {} jobs burning 1 ms, limit 4 x cores", sizes.cpu),
        format!("{:.2} cores", cores_used),
        format!(
            "{} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        ),
        "-".into(),
    );

    // A serial kind (limit 1), the most common tuning there is: it must
    // cost what one job at a time costs, not a commit per job.
    let serial = system.block_on(scenarios::drain(dir.path(), &settings, sizes.serial, 1));
    table.row(
        &format!("serial: drain {} jobs, concurrency 1", sizes.serial),
        rate(serial),
        format!("{} (limit {})", rate(drain), args.concurrency),
        format!("{:.2}x", serial / drain),
    );

    let enqueue = system.block_on(scenarios::enqueue_single(
        dir.path(),
        &settings,
        sizes.enqueue,
        16,
    ));
    let enqueue_base =
        baseline::enqueue_one_per_commit(dir.path(), &settings, sizes.baseline_enqueue);
    table.row(
        "enqueue 1 job/call, 16 producers",
        rate(enqueue),
        rate(enqueue_base),
        format!("{:.2}x", enqueue / enqueue_base),
    );

    let batch = system.block_on(scenarios::batch_enqueue(
        dir.path(),
        &settings,
        sizes.batch,
        1000,
    ));
    let (conn, batch_base) = baseline::enqueue_batched(dir.path(), &settings, sizes.batch, 1000);
    drop(conn);
    table.row(
        &format!("batch enqueue {} in 1000s", sizes.batch),
        rate(batch),
        rate(batch_base),
        format!("{:.2}x", batch / batch_base),
    );

    let mut latency = system.block_on(scenarios::latency(dir.path(), &settings, sizes.latency));
    let p50 = percentile(&mut latency, 0.50);
    let p99 = percentile(&mut latency, 0.99);
    table.row(
        "latency enqueue → start p50",
        format!("{p50:.0} µs"),
        "-".into(),
        "-".into(),
    );
    table.row(
        "latency enqueue → start p99",
        format!("{p99:.0} µs"),
        "-".into(),
        "-".into(),
    );

    let mut late = system.block_on(scenarios::delayed(dir.path(), &settings, sizes.delayed));
    let late_p99 = percentile(&mut late, 0.99);
    let late_p50 = percentile(&mut late, 0.50);
    table.row(
        &format!("delayed 10–1000 ms ({}): lateness p50/p99", sizes.delayed),
        format!("{late_p50:.2}/{late_p99:.2} ms"),
        "-".into(),
        "-".into(),
    );

    let (mixed, peaks) = system.block_on(scenarios::mixed(dir.path(), &settings, sizes.mixed));
    let limits_held = peaks
        .iter()
        .zip(scenarios::MIXED_LIMITS)
        .all(|(p, l)| *p <= l);
    table.row(
        &format!("mixed limits 1/4/16/64, 10% retry ({})", sizes.mixed),
        rate(mixed),
        format!("peaks {peaks:?}"),
        if limits_held {
            "held".into()
        } else {
            "BROKEN".into()
        },
    );

    let (counts_ms, counts_scan_ms) =
        system.block_on(counts::counts(dir.path(), &settings, sizes.counts));
    table.row(
        &format!("counts() with {} jobs kept", sizes.counts),
        format!("{counts_ms:.2} ms"),
        format!("{counts_scan_ms:.2} ms (scan)"),
        format!("{:.3}x", counts_ms / counts_scan_ms),
    );

    let mut full = serde_json::Map::new();
    if !args.no_full && synchronous != Synchronous::Full {
        let fs = Settings {
            synchronous: Synchronous::Full,
        };
        let drain_full = system.block_on(scenarios::drain(
            dir.path(),
            &fs,
            sizes.full,
            args.concurrency,
        ));
        let (conn, _) = baseline::enqueue_batched(dir.path(), &fs, sizes.full, 10_000);
        let drain_full_base = baseline::drain(&conn, args.concurrency);
        drop(conn);
        table.row(
            &format!("FULL: drain {} jobs", sizes.full),
            rate(drain_full),
            rate(drain_full_base),
            format!("{:.2}x", drain_full / drain_full_base),
        );
        let enqueue_full = system.block_on(scenarios::enqueue_single(
            dir.path(),
            &fs,
            sizes.full / 4,
            16,
        ));
        let enqueue_full_base =
            baseline::enqueue_one_per_commit(dir.path(), &fs, sizes.baseline_enqueue / 10);
        table.row(
            "FULL: enqueue 1 job/call, 16 producers",
            rate(enqueue_full),
            rate(enqueue_full_base),
            format!("{:.2}x", enqueue_full / enqueue_full_base),
        );
        full.insert("full_drain_jobs_s".into(), (drain_full.round()).into());
        full.insert(
            "full_drain_ratio".into(),
            round2(drain_full / drain_full_base).into(),
        );
        full.insert("full_enqueue_jobs_s".into(), (enqueue_full.round()).into());
        full.insert(
            "full_enqueue_ratio".into(),
            round2(enqueue_full / enqueue_full_base).into(),
        );
    }
    let mut pg = serde_json::Map::new();
    if !args.no_postgres {
        let (drain_n, enqueue_n, raw_enqueue_n, latency_n) = if args.quick {
            (5_000, 2_000, 1_000, 100)
        } else {
            (100_000, 20_000, 10_000, 1_000)
        };
        let drain_n = args.pg_jobs.unwrap_or(drain_n);
        let pg_drain = system.block_on(postgres::drain(drain_n, args.concurrency));
        let pg_drain_base = system.block_on(postgres::raw_drain(drain_n));
        table.row(
            &format!("PostgreSQL: drain {drain_n} jobs"),
            rate(pg_drain),
            format!("{} (raw PG)", rate(pg_drain_base)),
            format!("{:.2}x", pg_drain / pg_drain_base),
        );
        let pg_drain4 = system.block_on(postgres::drain_four_processes(drain_n, args.concurrency));
        table.row(
            &format!("PostgreSQL: drain {drain_n} jobs, 4 processes"),
            rate(pg_drain4),
            format!("{} (raw PG, 4 connections)", rate(pg_drain_base)),
            format!("{:.2}x", pg_drain4 / pg_drain_base),
        );
        let pg_enqueue = system.block_on(postgres::enqueue_single(enqueue_n));
        let pg_enqueue_base = system.block_on(postgres::raw_enqueue_single(raw_enqueue_n, true));
        let pg_enqueue_bare = system.block_on(postgres::raw_enqueue_single(raw_enqueue_n, false));
        table.row(
            "PostgreSQL: enqueue 1 job/call, 16 producers",
            rate(pg_enqueue),
            format!("{} (raw PG + NOTIFY)", rate(pg_enqueue_base)),
            format!("{:.2}x", pg_enqueue / pg_enqueue_base),
        );
        table.row(
            "  the same beside raw inserts that notify nobody",
            rate(pg_enqueue),
            format!("{} (raw PG)", rate(pg_enqueue_bare)),
            format!("{:.2}x", pg_enqueue / pg_enqueue_bare),
        );
        let mut delays = system.block_on(postgres::cross_instance_latency(latency_n));
        let (pg_p50, pg_p99) = (percentile(&mut delays, 0.50), percentile(&mut delays, 0.99));
        table.row(
            "PostgreSQL: enqueue on one instance → start on another",
            format!("p50 {:.2} ms", pg_p50 / 1000.0),
            format!("p99 {:.2} ms", pg_p99 / 1000.0),
            "-".into(),
        );
        pg.insert("pg_drain_jobs_s".into(), pg_drain.round().into());
        pg.insert(
            "pg_drain_ratio".into(),
            round2(pg_drain / pg_drain_base).into(),
        );
        pg.insert("pg_drain4_jobs_s".into(), pg_drain4.round().into());
        pg.insert(
            "pg_drain4_ratio".into(),
            round2(pg_drain4 / pg_drain_base).into(),
        );
        pg.insert("pg_enqueue_jobs_s".into(), pg_enqueue.round().into());
        pg.insert(
            "pg_enqueue_ratio".into(),
            round2(pg_enqueue / pg_enqueue_base).into(),
        );
        pg.insert(
            "pg_enqueue_ratio_no_notify".into(),
            round2(pg_enqueue / pg_enqueue_bare).into(),
        );
        pg.insert(
            "pg_cross_start_p50_ms".into(),
            round2(pg_p50 / 1000.0).into(),
        );
        pg.insert(
            "pg_cross_start_p99_ms".into(),
            round2(pg_p99 / 1000.0).into(),
        );
    }
    println!("  (total {:.0} s)", began.elapsed().as_secs_f64());

    let mut json = serde_json::json!({
        "drain_jobs_s": drain.round(),
        "drain_ratio": round2(drain / drain_base),
        "drain_plain_jobs_s": plain.round(),
        "drain_controls_jobs_s": controlled.round(),
        "drain_controls_ratio": round2(controlled / plain),
        "drain_controls_cpu_us": round2(controlled_cpu),
        "drain_plain_cpu_us": round2(plain_cpu),
        "drain_controls_cpu_ratio": round2(plain_cpu / controlled_cpu),
        "enqueue_jobs_s": enqueue.round(),
        "enqueue_ratio": round2(enqueue / enqueue_base),
        "batch_jobs_s": batch.round(),
        "latency_p50_us": p50.round(),
        "latency_p99_us": p99.round(),
        "delay_p99_late_ms": round2(late_p99),
        "scale_ratio": round2(drain / small),
        "rss_mib_1m": round2(rss),
        "mixed_jobs_s": mixed.round(),
        "mixed_limits_held": limits_held,
        "counts_ms_1m": round2(counts_ms),
        "serial_jobs_s": serial.round(),
        "cpu_cores_used": round2(cores_used),
        "serial_ratio": round2(serial / drain),
        "counts_scan_ms_1m": round2(counts_scan_ms),
    });
    json.as_object_mut().unwrap().extend(full);
    json.as_object_mut().unwrap().extend(pg);
    println!("{json}");
    if !limits_held {
        std::process::exit(1);
    }
}

fn median(samples: &mut [f64]) -> f64 {
    percentile(samples, 0.5)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
