//! The process's file descriptors, set up once at start: the open-files
//! limit raised to the hard limit (as HAProxy sizes its own, and as Go
//! programs do since Go 1.19), and the kernel's descriptor table grown up
//! front to what the proxy may use, so that it never grows under load.
//!
//! Why the table: Linux keeps a process's descriptors in one table that it
//! doubles when a new descriptor does not fit, and in a multi-threaded
//! process each doubling first waits for an RCU grace period
//! (`expand_fdtable` calls `synchronize_rcu`; nginx and HAProxy with one
//! worker are single-threaded and do not wait). The thread that accepted a
//! visitor (a worker's event loop) stops meanwhile: about 10 ms each time
//! on this project's machines, seen with `perf sched timehist -g` as
//! `synchronize_rcu <- expand_files <- alloc_fd` in the worker thread. A
//! surge of visitors (a thousand waiting in the group's queue) crosses
//! 256, 512, 1024 and 2048 descriptors within seconds, and each crossing
//! left every node of the group without a new request for those 10 ms
//! (`benches/README.md`, "Thirteenth session"). Grown here, before the
//! worker threads exist, the table costs no grace period, and it never
//! shrinks. It is kernel memory, 8 bytes per descriptor (512 KiB for
//! [`RESERVE_MAX`]), not counted in the process's resident memory.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// The most descriptors the table is grown to at start: beyond, it grows on
/// demand (two more doublings reach 262,144).
pub const RESERVE_MAX: u64 = 65_536;

/// What [`set_up`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptors {
    /// The open-files limit (soft) found at start.
    pub limit_before: u64,
    /// The open-files limit now.
    pub limit: u64,
    /// How many descriptors the table holds now without growing.
    pub reserved: u64,
}

/// Raise the open-files limit to the hard limit and grow the descriptor
/// table to [`reserve_for`] that limit. Call it before any worker thread
/// starts.
pub fn set_up() -> io::Result<Descriptors> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    let limit = raised_limit(soft, hard);
    if limit != soft {
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).map_err(io::Error::from)?;
    }
    let want = reserve_for(limit);
    reserve(want)?;
    Ok(Descriptors {
        limit_before: soft,
        limit,
        reserved: want,
    })
}

/// The soft limit to run with: the hard limit, unless that is unlimited
/// (which Linux does not allow for open files; kept as found).
fn raised_limit(soft: u64, hard: u64) -> u64 {
    if hard == RLIM_INFINITY {
        soft
    } else {
        hard.max(soft)
    }
}

/// How many descriptors the table is grown to for an open-files limit.
pub fn reserve_for(limit: u64) -> u64 {
    limit.min(RESERVE_MAX)
}

/// Grow the descriptor table to hold at least `n` descriptors: a
/// descriptor duplicated to number `n - 1`, then closed (the table stays).
fn reserve(n: u64) -> io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let highest = i32::try_from(n - 1).unwrap_or(i32::MAX);
    let null = File::open("/dev/null")?;
    let fd = fcntl(&null, FcntlArg::F_DUPFD_CLOEXEC(highest)).map_err(io::Error::from)?;
    // SAFETY: `fd` was just returned by fcntl(F_DUPFD_CLOEXEC): an open
    // descriptor that nothing else owns.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// The size of a process's descriptor table: the `FDSize` line of its
/// `/proc/PID/status` text.
pub fn table_size(proc_status: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_goes_to_the_hard_limit_unless_that_is_unlimited() {
        for (soft, hard, want) in [
            (1024, 524_288, 524_288),
            (20_000, 20_000, 20_000),
            (1024, RLIM_INFINITY, 1024),
            // Never lowered.
            (4096, 1024, 4096),
        ] {
            assert_eq!(raised_limit(soft, hard), want, "{soft} {hard}");
        }
    }

    #[test]
    fn the_table_is_grown_to_the_limit_up_to_a_cap() {
        assert_eq!(reserve_for(1024), 1024);
        assert_eq!(reserve_for(RESERVE_MAX), RESERVE_MAX);
        assert_eq!(reserve_for(1_048_576), RESERVE_MAX);
        assert_eq!(reserve_for(0), 0);
    }

    #[test]
    fn after_set_up_the_table_holds_what_was_reserved_and_the_probe_is_closed() {
        let d = set_up().expect("set up");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(soft, d.limit);
        assert_eq!(soft, raised_limit(d.limit_before, hard));
        assert_eq!(d.reserved, reserve_for(d.limit));
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let size = table_size(&status).expect("FDSize");
        assert!(
            size >= d.reserved,
            "table of {size}, {} reserved",
            d.reserved
        );
        // The descriptor that grew the table is closed again.
        let probe = format!("/proc/self/fd/{}", d.reserved - 1);
        assert!(!std::path::Path::new(&probe).exists(), "{probe} left open");
    }
}
