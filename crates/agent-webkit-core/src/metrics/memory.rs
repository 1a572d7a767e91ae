//! The agents' memory: resident set size of every process descending from this server (the
//! agents' CLIs and whatever they run), read from `/proc` (0 where there is none).

use std::collections::HashMap;

/// Sum of `VmRSS` over this process's descendants, in bytes.
pub(super) fn children_rss_bytes() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut total = 0u64;
    let mut stack = children.remove(&std::process::id()).unwrap_or_default();
    while let Some(pid) = stack.pop() {
        total = total.saturating_add(rss_bytes(pid));
        if let Some(more) = children.remove(&pid) {
            stack.extend(more);
        }
    }
    total
}

/// The parent pid from `/proc/PID/stat` (the field after the parenthesised command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `VmRSS` from `/proc/PID/status`, in bytes (0 when gone or a kernel thread).
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn a_child_counts_and_its_exit_does_not() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        // The child's own first: `sleep` is still loading (its resident set only grows now that
        // `spawn` has returned after its exec), so the sum read after it includes at least this.
        let own = super::rss_bytes(pid);
        let with = super::children_rss_bytes();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(own > 0, "sleep has a resident set");
        assert!(with >= own, "{with} < {own}");
        assert_eq!(super::rss_bytes(pid), 0);
    }
}
