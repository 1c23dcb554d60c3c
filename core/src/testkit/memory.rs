//! A watch on a child process's memory, for the hostile-input suites: the peak resident set it
//! reached (`VmHWM`), printed by the tests, and a ceiling past which the child is killed at once,
//! so that a decoding bomb costs the shared machine a bounded amount of memory even on code that
//! does not defend against it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the child's memory is read: at the rate an undefended Avro decoder grows (a few
/// GB/s), a tick lets it pass the ceiling by a few tens of MB at most.
const TICK: Duration = Duration::from_millis(10);

/// Watches one process's memory from a thread of its own until dropped.
#[derive(Debug)]
pub struct MemoryWatch {
    pid: u32,
    ceiling: u64,
    peak: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MemoryWatch {
    /// Starts watching process `pid`; when its resident set passes `ceiling` bytes it is sent
    /// SIGKILL and [`MemoryWatch::killed`] says so.
    pub fn start(pid: u32, ceiling: u64) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, killed, stop) = (peak.clone(), killed.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(memory) = Memory::of(pid) else {
                        return; // gone (or a zombie): nothing more to read
                    };
                    peak.fetch_max(memory.hwm.max(memory.rss), Ordering::Relaxed);
                    if memory.rss > ceiling && !killed.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "process {pid} holds {} MiB, over the ceiling of {} MiB: killing it",
                            memory.rss >> 20,
                            ceiling >> 20
                        );
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    std::thread::sleep(TICK);
                }
            })
        };
        Self {
            pid,
            ceiling,
            peak,
            killed,
            stop,
            thread: Some(thread),
        }
    }

    /// The highest resident set seen so far, in bytes (the kernel's `VmHWM`, read while the
    /// process lives).
    pub fn peak(&self) -> u64 {
        if let Some(memory) = Memory::of(self.pid) {
            self.peak
                .fetch_max(memory.hwm.max(memory.rss), Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }

    /// Whether the process was killed for passing the ceiling.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// The ceiling, in bytes.
    pub fn ceiling(&self) -> u64 {
        self.ceiling
    }

    /// `"<name>: peak RSS <n> MiB (ceiling <m> MiB)"`, for the test's output.
    pub fn report(&self, name: &str) -> String {
        format!(
            "{name}: peak RSS {:.1} MiB (VmHWM; ceiling {} MiB)",
            mib(self.peak()),
            self.ceiling >> 20
        )
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bytes as MiB.
#[allow(clippy::cast_precision_loss)] // memory sizes are far below 2^53
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// A process's memory as `/proc/<pid>/status` gives it, in bytes.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    hwm: u64,
}

impl Memory {
    /// `None` once the process is gone or a zombie (whose status has no memory lines).
    fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.trim();
                let kib: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
                Some(kib * 1024)
            })
        };
        Some(Self {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory() {
        let watch = MemoryWatch::start(std::process::id(), u64::MAX);
        assert!(watch.peak() > 0);
        assert!(!watch.killed());
    }
}
