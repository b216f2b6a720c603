//! The machine's own limits, measured in the same run as the day, so that a day's figures can
//! be read against them: the disk's fdatasync'd write speed bounds the log, and the time of a
//! random memory access bounds the engine's in-memory state (its maps of orders, payments,
//! keys and streams are far larger than the caches, and most lookups miss them). Both drift on
//! a shared machine; a day that ran slower when memory did is read differently from one that
//! ran slower alone.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use super::per_sec;

/// The disk's fdatasync'd sequential write speed in MB/s: `mib` MiB in 1 MiB chunks, each
/// synced, as `benches/log.rs` measures it. 0 when `mib` is 0.
pub(super) fn raw_mb_per_sec(dir: &Path, mib: u64) -> anyhow::Result<f64> {
    if mib == 0 {
        return Ok(0.0);
    }
    let path = dir.join("raw-disk-probe");
    let mut file = File::create(&path)?;
    let chunk = vec![0xA5u8; 1 << 20];
    let started = Instant::now();
    for _ in 0..mib {
        file.write_all(&chunk)?;
        file.sync_data()?;
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(per_sec(mib << 20, seconds) / 1e6)
}

/// The time of one random memory access in nanoseconds: a chain of loads through `mib` MiB,
/// each load's address read by the one before, so that they cannot overlap. 0 when `mib` is
/// 0.
pub(super) fn memory_access_ns(mib: u64) -> f64 {
    const LOADS: u64 = 2_000_000;
    let Some(slots) = usize::try_from(mib << 18).ok().filter(|&n| n >= 2) else {
        return 0.0;
    };
    let slots = slots.next_power_of_two();
    let mask = slots - 1;
    // x -> ax + 1 (mod a power of two, with a = 1 mod 4) passes every slot once before it
    // comes back (Hull–Dobell), in an order that jumps across the whole buffer: each slot
    // holds the next one's index.
    const A: usize = 0x4C95_7F2D;
    let step = |x: usize| x.wrapping_mul(A).wrapping_add(1) & mask;
    let mut next = vec![0u32; slots];
    let mut x = 0;
    for _ in 0..slots {
        let y = step(x);
        next[x] = u32::try_from(y).expect("a slot index fits in a u32");
        x = y;
    }
    let started = Instant::now();
    let mut at = 0u32;
    for _ in 0..LOADS {
        at = next[at as usize];
    }
    let seconds = started.elapsed().as_secs_f64();
    std::hint::black_box(at);
    1e9 / per_sec(LOADS, seconds)
}
