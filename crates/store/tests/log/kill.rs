//! A child process appending from several threads is SIGKILLed at random moments; after each
//! kill the log reopens and holds every record the child saw acknowledged.
//!
//! The child is this test binary itself, run with `ORDERLY_KILL_CHILD_DIR` set. The number of
//! kills is 50 by default and `ORDERLY_KILLS` when set.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use orderly_store::{Log, LogConfig, Position};

use super::common::{payload, read_all, record, small_segments};

const CHILD_ENV: &str = "ORDERLY_KILL_CHILD_DIR";

/// In the child: append forever from four threads, printing each acknowledged batch.
#[test]
fn child_appender() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    // A checkpoint every few milliseconds, so that kills land on and around them too.
    let config = LogConfig { checkpoint_every: Duration::from_millis(3), ..small_segments() };
    let (log, _) = Log::open(std::path::Path::new(&dir), config).expect("child opens");
    let start = log.head().0;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let id = (start + 1) * 1_000_000_000 + t * 100_000_000 + i;
                    let batch = vec![
                        record(&format!("t{t}"), &payload(id)),
                        record("shared", &payload(id)),
                    ];
                    let appended = log.append(batch).expect("append");
                    println!("ack {} {id}", appended.first.0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let kills: u64 = std::env::var("ORDERLY_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut total_acked = 0;
    for kill in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = Command::new(&exe)
            .args(["--exact", "log::kill::child_appender", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut acked = HashMap::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut parts = line.split_whitespace();
                if parts.next() == Some("ack") {
                    let first: u64 = parts.next().unwrap().parse().unwrap();
                    let id: u64 = parts.next().unwrap().parse().unwrap();
                    acked.insert(first, id);
                }
            }
            acked
        });
        std::thread::sleep(Duration::from_millis(20 + seed % 60));
        child.kill().unwrap();
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        total_acked += acked.len();

        let (log, _) = Log::open(
            dir.path(),
            LogConfig { segment_size: small_segments().segment_size, ..LogConfig::default() },
        )
        .unwrap_or_else(|e| panic!("kill {kill}: the log reopens: {e}"));
        let records = read_all(&log);
        for (first, id) in &acked {
            let r = &records[usize::try_from(*first).unwrap()];
            assert_eq!(r.position, Position(*first));
            assert_eq!(
                &r.payload[..8],
                &id.to_le_bytes(),
                "kill {kill}: acknowledged batch at {first} survived"
            );
            let second = &records[usize::try_from(first + 1).unwrap()];
            assert_eq!(second.stream, b"shared", "kill {kill}: batches are whole");
        }
        assert_eq!(records.len() % 2, 0, "kill {kill}: no half batch survived");
    }
    assert!(total_acked > 0, "the children acknowledged something");
}
