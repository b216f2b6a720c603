//! Durable append throughput of `orderly-store`'s log, against the disk's own limit and against
//! sled used as a log, all measured in one run on one disk.
//!
//! 1. **log**: `APPENDERS` threads each keep `IN_FLIGHT` batches of `BATCH` records queued with
//!    `Log::append_with` (128-byte payloads, 21-byte stream ids like `tenant-3/order-123456`).
//!    A batch counts once its callback reports it durable. Each appender builds its
//!    `NewRecord`s (formatting stream ids, filling payloads) before the clock starts, so the
//!    figures are the log's cost, not the workload generator's; what the log does with a batch
//!    (checking and encoding it on the appender's thread, then freeing it) is all inside the
//!    clock. A batch refused with `QueueFull` is built again inside the clock. Reports
//!    records/s, MB/s of encoded records, submit-to-ack latency per batch, how each of the log's
//!    own threads (`orderly-log-*`) spent its time: on a CPU, waiting for one, or blocked (fsync
//!    or idle), and the CPU the log cost per record on its threads and the appenders'
//!    (`cpu_ns_per_record`), which other load on the machine hardly moves.
//! 2. **raw**: as many bytes as the log wrote, with plain `File::write_all` + `sync_data`
//!    (fdatasync) per chunk, the chunk being the log's average group commit. This is the ceiling
//!    the log is compared with (`ratio_to_raw`).
//! 3. **sled** 0.34.7 as a log: big-endian u64 sequence keys, payloads as values, one
//!    `apply_batch` + `flush` per batch, same threads and batch size, fewer records. Its batches
//!    too are built before the clock starts; appender `a`'s `j`th batch holds the keys of
//!    round `j`, slot `a`, so every key is used once.
//!
//! Run with `cargo bench --bench log`. Environment overrides (defaults in brackets):
//! `ORDERLY_BENCH_RECORDS` [4000000], `ORDERLY_BENCH_APPENDERS` [4], `ORDERLY_BENCH_BATCH` [500],
//! `ORDERLY_BENCH_IN_FLIGHT` [4], `ORDERLY_BENCH_SLED_RECORDS` [200000], `ORDERLY_BENCH_DIR`
//! [`target/bench-log`]. Counts are rounded up to whole batches per appender.
//!
//! Human-readable lines go to stderr; the only stdout line is one JSON object. MB means 10^6
//! bytes. Data lives under `target/` so that it is on the same disk as a real data folder (not a
//! tmpfs), and is removed at the end. The thread figures come from `/proc` (Linux); without
//! them they are left out and the raw chunk falls back to 1 MiB.

/// The allocator orderly's binaries use (see the workspace `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orderly_store::{AppendError, Expected, Log, LogConfig, NewRecord};

const PAYLOAD_LEN: usize = 128;
/// Prefix of the names of the log's own threads (writer, syncer, whatever the store runs).
const LOG_THREAD_PREFIX: &str = "orderly-log";
/// Raw chunk size when the log's own group size cannot be read from `/proc`.
const FALLBACK_CHUNK: u64 = 1 << 20;
/// Pause before retrying a refused batch: short next to one group commit (milliseconds), so the
/// retry lands soon after the writer has made room.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(100);

fn main() {
    let settings = Settings::from_env();
    let chosen = std::env::var_os("ORDERLY_BENCH_DIR").map(PathBuf::from);
    let base = chosen
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-log"));
    fs::create_dir_all(&base).expect("create the benchmark folder");
    let scratch =
        tempfile::Builder::new().prefix("run-").tempdir_in(&base).expect("create a scratch folder");
    eprintln!(
        "log bench in {}: {} appenders x {} batches in flight x {} records, {PAYLOAD_LEN}-byte \
         payloads",
        scratch.path().display(),
        settings.appenders,
        settings.in_flight,
        settings.batch
    );

    let log = run_log(&scratch.path().join("log"), &settings);
    fs::remove_dir_all(scratch.path().join("log")).expect("remove the log's segments");
    log.print();

    // The raw run writes what the log wrote, in the log's own group sizes, so that the ratio
    // compares the log with the best the disk can do for the same fsync pattern.
    let writes = log.threads.iter().fold(ThreadStats::default(), |sum, t| sum.plus(t.stats));
    // What the log's threads wrote should be the computed record bytes plus a few segment
    // headers; a gap means `NewRecord::encoded_len` no longer tells what the log writes.
    if writes.write_calls > 0 && writes.write_bytes.abs_diff(log.bytes) > log.bytes / 100 {
        eprintln!(
            "warning: the log's threads wrote {} bytes, but the records encode to {} bytes",
            writes.write_bytes, log.bytes
        );
    }
    let (chunk, chunk_source) = match writes.write_bytes.checked_div(writes.write_calls) {
        Some(chunk) if chunk > 0 => (chunk, "log_average_group"),
        _ => (FALLBACK_CHUNK, "fallback_1MiB"),
    };
    let raw = run_raw(&scratch.path().join("raw.dat"), log.bytes, chunk);
    eprintln!(
        "raw:  {:.1} MB in {chunk}-byte chunks ({chunk_source}), each fdatasync'd: {:.2} s, \
         {:.1} MB/s",
        mb(log.bytes),
        raw.seconds,
        raw.mb_per_sec
    );

    let sled = run_sled(&scratch.path().join("sled"), &settings);
    eprintln!(
        "sled: {} records in {:.2} s: {:.0} records/s, ack p50 {:.0} us, p99 {:.0} us",
        sled.records,
        sled.seconds,
        sled.records_per_sec(),
        sled.latency.p50_us,
        sled.latency.p99_us
    );

    scratch.close().expect("remove the scratch folder");
    if chosen.is_none() {
        // Fails, harmlessly, while another run still has its scratch folder in there.
        let _ = fs::remove_dir(&base);
    }

    let mut json = Json::default();
    json.int("records", log.records)
        .num("seconds", log.seconds, 3)
        .int("appenders", settings.appenders as u64)
        .int("batch_size", settings.batch as u64)
        .int("in_flight", settings.in_flight as u64)
        .num("records_per_sec", log.records_per_sec(), 0)
        .num("mb_per_sec", log.mb_per_sec(), 1)
        .int("bytes_written", log.bytes)
        .num("ack_p50_us", log.latency.p50_us, 0)
        .num("ack_p99_us", log.latency.p99_us, 0)
        .num("ack_max_us", log.latency.max_us, 0)
        .int("queue_full_retries", log.queue_full_retries)
        .num("raw_mb_per_sec", raw.mb_per_sec, 1)
        .int("raw_chunk_bytes", chunk)
        .str("raw_chunk_source", chunk_source)
        .num("ratio_to_raw", log.mb_per_sec() / raw.mb_per_sec, 3)
        .int("sled_records", sled.records)
        .num("sled_records_per_sec", sled.records_per_sec(), 0)
        .num("vs_sled", log.records_per_sec() / sled.records_per_sec(), 2)
        .num("appenders_cpu_seconds", log.appenders_cpu.as_secs_f64(), 3);
    if !log.threads.is_empty() {
        let mut threads = Json::default();
        for t in &log.threads {
            let mut one = Json::default();
            one.num("on_cpu_frac", log.share(t.stats.on_cpu), 3)
                .num("runqueue_frac", log.share(t.stats.runqueue), 3)
                .int("write_calls", t.stats.write_calls);
            threads.raw(&t.name, &one.finish());
        }
        let busiest = log.threads.iter().map(|t| t.stats.on_cpu).max().unwrap_or_default();
        // CPU the log cost per record, on its own threads and on the appenders' (which check
        // and encode batches): unlike the rates, this hardly moves with other load on the
        // machine, so it compares builds on a busy one.
        let cpu = writes.on_cpu + log.appenders_cpu;
        json.int("group_commits", writes.write_calls)
            .int("bytes_per_group", chunk)
            .num("busiest_log_thread_on_cpu_frac", log.share(busiest), 3)
            .num("cpu_ns_per_record", cpu.as_secs_f64() * 1e9 / to_f64(log.records), 0)
            .raw("log_threads", &threads.finish());
    }
    println!("{}", json.finish());
}

/// The workload's shape, from the environment.
struct Settings {
    appenders: usize,
    batch: usize,
    in_flight: usize,
    /// Batches each appender submits to the log.
    log_batches: u64,
    /// Batches each appender applies to sled.
    sled_batches: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let records: u64 = env_or("ORDERLY_BENCH_RECORDS", 4_000_000);
        let sled_records: u64 = env_or("ORDERLY_BENCH_SLED_RECORDS", 200_000);
        let appenders: usize = env_or("ORDERLY_BENCH_APPENDERS", 4);
        let batch: usize = env_or("ORDERLY_BENCH_BATCH", 500);
        let in_flight: usize = env_or("ORDERLY_BENCH_IN_FLIGHT", 4);
        assert!(
            appenders > 0 && batch > 0 && in_flight > 0,
            "appenders, batch and in-flight must be at least 1"
        );
        let per_round = (appenders * batch) as u64;
        Settings {
            appenders,
            batch,
            in_flight,
            log_batches: records.div_ceil(per_round),
            sled_batches: sled_records.div_ceil(per_round),
        }
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => {
            value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a valid value"))
        }
        Err(_) => default,
    }
}

/// The `i`th record of the workload. Orders get four events each and are spread over eight
/// tenants, so the log's stream index grows as it would for a real order log.
fn record(i: u64, timestamp: u64) -> NewRecord {
    let order = i / 4;
    let mut payload = vec![0x5a; PAYLOAD_LEN];
    payload[..8].copy_from_slice(&i.to_le_bytes());
    NewRecord {
        stream: format!("tenant-{}/order-{:06}", order % 8, order % 1_000_000).into_bytes(),
        expected: Expected::Any,
        event_type: u16::try_from(i % 4).expect("below 4"),
        schema_version: 1,
        timestamp,
        payload,
    }
}

/// Submit-to-ack latencies of one run, one per batch.
struct Latency {
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        // Nearest-rank percentile: the smallest sample at or above `p` percent of them.
        let at = |p: usize| {
            let rank = (samples.len() * p).div_ceil(100).max(1);
            samples[rank - 1].as_secs_f64() * 1e6
        };
        Latency { p50_us: at(50), p99_us: at(99), max_us: at(100) }
    }
}

/// What the kernel counted for one thread: time on a CPU and waiting for one (`schedstat`), and
/// write system calls (`io`). The log makes one `pwrite` per group commit, each followed by one
/// `fdatasync` (plus a 64-byte header per new segment), so its write calls count its group
/// commits.
#[derive(Clone, Copy, Debug, Default)]
struct ThreadStats {
    on_cpu: Duration,
    runqueue: Duration,
    write_calls: u64,
    write_bytes: u64,
}

impl ThreadStats {
    /// `task` is a `/proc/<pid>/task/<tid>` folder (or `/proc/thread-self`).
    fn read(task: &Path) -> Option<ThreadStats> {
        let sched = fs::read_to_string(task.join("schedstat")).ok()?;
        let mut sched = sched.split_whitespace().map(u64::from_str);
        let on_cpu = Duration::from_nanos(sched.next()?.ok()?);
        let runqueue = Duration::from_nanos(sched.next()?.ok()?);
        let io = fs::read_to_string(task.join("io")).ok()?;
        let field = |name: &str| {
            io.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
                .and_then(|v| v.parse().ok())
        };
        Some(ThreadStats {
            on_cpu,
            runqueue,
            write_calls: field("syscw")?,
            write_bytes: field("wchar")?,
        })
    }

    fn plus(self, other: ThreadStats) -> ThreadStats {
        ThreadStats {
            on_cpu: self.on_cpu + other.on_cpu,
            runqueue: self.runqueue + other.runqueue,
            write_calls: self.write_calls + other.write_calls,
            write_bytes: self.write_bytes + other.write_bytes,
        }
    }
}

/// One of this process's threads, by its kernel name (cut to 15 bytes).
struct NamedThread {
    name: String,
    stats: ThreadStats,
}

/// This process's threads whose names start with `prefix`, as counted so far; empty where
/// `/proc` cannot tell.
fn threads_named(prefix: &str) -> Vec<NamedThread> {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut found: Vec<NamedThread> = tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let task = task.path();
            let name = fs::read_to_string(task.join("comm")).ok()?;
            let name = name.trim_end();
            if !name.starts_with(prefix) {
                return None;
            }
            let stats = ThreadStats::read(&task)?;
            Some(NamedThread { name: name.to_owned(), stats })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

struct LogRun {
    records: u64,
    /// Encoded bytes of the records: header + stream id + payload each.
    bytes: u64,
    seconds: f64,
    latency: Latency,
    queue_full_retries: u64,
    appenders_cpu: Duration,
    /// The log's own threads over the run, where `/proc` tells.
    threads: Vec<NamedThread>,
}

impl LogRun {
    fn records_per_sec(&self) -> f64 {
        to_f64(self.records) / self.seconds
    }

    fn mb_per_sec(&self) -> f64 {
        mb(self.bytes) / self.seconds
    }

    /// The fraction of the run that `time` is.
    fn share(&self, time: Duration) -> f64 {
        time.as_secs_f64() / self.seconds
    }

    fn print(&self) {
        eprintln!(
            "log:  {} records ({:.1} MB) in {:.2} s: {:.0} records/s, {:.1} MB/s, ack p50 {:.0} \
             us, p99 {:.0} us, max {:.0} us, {} queue-full retries",
            self.records,
            mb(self.bytes),
            self.seconds,
            self.records_per_sec(),
            self.mb_per_sec(),
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
            self.queue_full_retries
        );
        eprintln!(
            "      appender threads used {:.2} CPU-s in all while the clock ran",
            self.appenders_cpu.as_secs_f64()
        );
        if self.threads.is_empty() {
            eprintln!("      the log's thread figures are unavailable (no /proc)");
        }
        for t in &self.threads {
            let (on_cpu, runqueue) = (self.share(t.stats.on_cpu), self.share(t.stats.runqueue));
            eprintln!(
                "      {}: on CPU {:.0}%, waiting for a CPU {:.0}%, blocked (fsync or idle) \
                 {:.0}%; {} writes of {} bytes on average",
                t.name,
                100.0 * on_cpu,
                100.0 * runqueue,
                100.0 * (1.0 - on_cpu - runqueue),
                t.stats.write_calls,
                t.stats.write_bytes.checked_div(t.stats.write_calls).unwrap_or(0)
            );
        }
    }
}

/// What one appender thread did.
#[derive(Default)]
struct AppenderRun {
    bytes: u64,
    latencies: Vec<Duration>,
    queue_full_retries: u64,
    cpu: Duration,
}

fn run_log(dir: &Path, settings: &Settings) -> LogRun {
    let (log, _recovery) = Log::open(dir, LogConfig::default()).expect("open the log");
    let timestamp = unix_millis();
    let per_appender = settings.log_batches * settings.batch as u64;
    // Appenders wait at the barrier so that the clock starts at the first submit, not while
    // threads are being spawned.
    let start_line = Arc::new(Barrier::new(settings.appenders + 1));
    let appenders: Vec<_> = (0..settings.appenders as u64)
        .map(|a| {
            let (log, start_line) = (log.clone(), start_line.clone());
            let (batch, batches, in_flight) =
                (settings.batch as u64, settings.log_batches, settings.in_flight);
            thread::spawn(move || {
                let first = a * per_appender;
                let prebuilt: Vec<Vec<NewRecord>> = (0..batches)
                    .map(|b| build_batch(first + b * batch..first + (b + 1) * batch, timestamp))
                    .collect();
                start_line.wait();
                log_appender(&log, first, batch, prebuilt, in_flight, timestamp)
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    let runs: Vec<AppenderRun> =
        appenders.into_iter().map(|h| h.join().expect("appender thread")).collect();
    let seconds = start.elapsed().as_secs_f64();
    // The log's threads did next to nothing before the first submit (opening writes the first
    // segment on this thread), so their totals are the run's. Read before the log is dropped:
    // its threads end with the last handle.
    let threads = threads_named(LOG_THREAD_PREFIX);
    let records = per_appender * settings.appenders as u64;
    assert_eq!(log.head().0, records, "every acknowledged record is in the log");
    drop(log);
    LogRun {
        records,
        bytes: runs.iter().map(|r| r.bytes).sum(),
        seconds,
        queue_full_retries: runs.iter().map(|r| r.queue_full_retries).sum(),
        appenders_cpu: runs.iter().map(|r| r.cpu).sum(),
        latency: Latency::of(runs.into_iter().flat_map(|r| r.latencies).collect()),
        threads,
    }
}

/// The records of positions `range` in the workload.
fn build_batch(range: std::ops::Range<u64>, timestamp: u64) -> Vec<NewRecord> {
    range.map(|i| record(i, timestamp)).collect()
}

/// Submits the `prebuilt` batches (records `first..`, `batch` per batch), keeping up to
/// `in_flight` unacknowledged.
fn log_appender(
    log: &Log,
    first: u64,
    batch: u64,
    prebuilt: Vec<Vec<NewRecord>>,
    in_flight: usize,
    timestamp: u64,
) -> AppenderRun {
    let cpu_before = thread_cpu();
    let (ack, acks) = mpsc::channel::<Result<Duration, AppendError>>();
    let mut run = AppenderRun::default();
    let mut pending = 0;
    let wait_for_ack = |run: &mut AppenderRun| {
        let latency = acks
            .recv()
            .expect("the writer answers every batch")
            .expect("the log accepts the batch");
        run.latencies.push(latency);
    };
    for (b, mut records) in (0..).zip(prebuilt) {
        if pending == in_flight {
            wait_for_ack(&mut run);
            pending -= 1;
        }
        let range = first + b * batch..first + (b + 1) * batch;
        run.bytes += records.iter().map(|r| r.encoded_len() as u64).sum::<u64>();
        // Latency counts from the first try, so a refused batch's wait is included.
        let submitted = Instant::now();
        loop {
            let ack = ack.clone();
            let done = move |outcome: Result<_, AppendError>| {
                // The appender drains every ack before it returns, so the send cannot fail.
                let _ = ack.send(outcome.map(|_| submitted.elapsed()));
            };
            match log.append_with(records, done) {
                Ok(()) => break,
                Err(AppendError::QueueFull) => {
                    run.queue_full_retries += 1;
                    thread::sleep(QUEUE_FULL_BACKOFF);
                    // A refused batch is consumed, so it is built again.
                    records = build_batch(range.clone(), timestamp);
                }
                Err(e) => panic!("append failed: {e}"),
            }
        }
        pending += 1;
    }
    for _ in 0..pending {
        wait_for_ack(&mut run);
    }
    run.cpu = thread_cpu().saturating_sub(cpu_before);
    run
}

/// CPU time this thread has used so far (zero where `/proc` cannot tell).
fn thread_cpu() -> Duration {
    ThreadStats::read(Path::new("/proc/thread-self")).map_or(Duration::ZERO, |s| s.on_cpu)
}

struct RawRun {
    seconds: f64,
    mb_per_sec: f64,
}

/// Writes `total` bytes to a new plain file in `chunk`-byte writes, each followed by
/// `sync_data`.
fn run_raw(path: &Path, total: u64, chunk: u64) -> RawRun {
    let mut file = File::create(path).expect("create the raw file");
    let buf = vec![0xa5; usize::try_from(chunk).expect("chunk fits in memory")];
    let start = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        file.write_all(&buf[..usize::try_from(n).expect("n <= chunk")]).expect("raw write");
        file.sync_data().expect("raw fdatasync");
        left -= n;
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(file);
    fs::remove_file(path).expect("remove the raw file");
    RawRun { seconds, mb_per_sec: mb(total) / seconds }
}

struct SledRun {
    records: u64,
    seconds: f64,
    latency: Latency,
}

impl SledRun {
    fn records_per_sec(&self) -> f64 {
        to_f64(self.records) / self.seconds
    }
}

/// sled as a log: each appender applies a batch under keys of its own and flushes before the
/// next batch, so every batch is acknowledged only once sled says it is durable. sled has no
/// queued appends, so each appender has one batch in flight.
fn run_sled(dir: &Path, settings: &Settings) -> SledRun {
    let db = sled::Config::new().path(dir).open().expect("open sled");
    let applied = Arc::new(AtomicU64::new(0));
    let start_line = Arc::new(Barrier::new(settings.appenders + 1));
    let appenders: Vec<_> = (0..settings.appenders as u64)
        .map(|a| {
            let (db, applied, start_line) = (db.clone(), applied.clone(), start_line.clone());
            let (batch, batches) = (settings.batch as u64, settings.sled_batches);
            let appenders = settings.appenders as u64;
            thread::spawn(move || {
                let payload = [0x5a; PAYLOAD_LEN];
                let prebuilt: Vec<sled::Batch> = (0..batches)
                    .map(|j| {
                        let first = (j * appenders + a) * batch;
                        let mut writes = sled::Batch::default();
                        for key in first..first + batch {
                            writes.insert(&key.to_be_bytes(), &payload[..]);
                        }
                        writes
                    })
                    .collect();
                start_line.wait();
                let mut latencies = Vec::new();
                for writes in prebuilt {
                    let submitted = Instant::now();
                    db.apply_batch(writes).expect("sled apply_batch");
                    applied.fetch_add(batch, Ordering::Relaxed);
                    db.flush().expect("sled flush");
                    latencies.push(submitted.elapsed());
                }
                latencies
            })
        })
        .collect();
    start_line.wait();
    let start = Instant::now();
    let latencies: Vec<Duration> =
        appenders.into_iter().flat_map(|h| h.join().expect("sled appender thread")).collect();
    let seconds = start.elapsed().as_secs_f64();
    let records = applied.load(Ordering::Relaxed);
    assert_eq!(db.len() as u64, records, "sled holds every record");
    drop(db);
    SledRun { records, seconds, latency: Latency::of(latencies) }
}

/// A JSON object of numbers, plain strings and nested objects, written by hand to keep
/// dependencies out.
#[derive(Default)]
struct Json {
    fields: Vec<String>,
}

impl Json {
    fn int(&mut self, key: &str, value: u64) -> &mut Json {
        self.fields.push(format!("\"{key}\":{value}"));
        self
    }

    /// A number with `decimals` digits after the point; JSON has no NaN or infinity, so those
    /// become `null`.
    fn num(&mut self, key: &str, value: f64, decimals: usize) -> &mut Json {
        if value.is_finite() {
            self.fields.push(format!("\"{key}\":{value:.decimals$}"));
        } else {
            self.fields.push(format!("\"{key}\":null"));
        }
        self
    }

    /// `value` is JSON text already, such as a nested object.
    fn raw(&mut self, key: &str, value: &str) -> &mut Json {
        self.fields.push(format!("\"{key}\":{value}"));
        self
    }

    /// `value` must need no escaping (the keys and labels here are plain ASCII).
    fn str(&mut self, key: &str, value: &str) -> &mut Json {
        self.fields.push(format!("\"{key}\":\"{value}\""));
        self
    }

    fn finish(&self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

#[allow(
    clippy::cast_precision_loss,
    reason = "counts and byte totals here stay far below 2^53, where f64 is exact"
)]
fn to_f64(n: u64) -> f64 {
    n as f64
}

fn mb(bytes: u64) -> f64 {
    to_f64(bytes) / 1e6
}

fn unix_millis() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("milliseconds fit in u64")
}
