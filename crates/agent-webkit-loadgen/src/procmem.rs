//! Memory and process counts of a server and its agent processes, read from `/proc` (Linux).

/// One reading of a server's memory and its agents.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    /// The server's resident set size.
    pub server_rss: u64,
    /// Sum of the proportional set size (`Pss` of `smaps_rollup`; `VmRSS` when unreadable)
    /// of every live descendant of the server.
    pub agents_pss: u64,
    /// Live (non-zombie) direct children of the server whose command line mentions
    /// [`AGENT_MATCH`]: its agent processes (not, e.g., its process-group watchdog shell).
    pub live_agents: u64,
    /// Live descendants (agents and whatever they started).
    pub descendants: u64,
}

impl Reading {
    /// Server RSS + agents' PSS.
    pub fn total(&self) -> u64 {
        self.server_rss + self.agents_pss
    }
}

/// What an agent process's command line contains (the fake and the real CLI both match).
pub const AGENT_MATCH: &str = "claude";

fn is_agent(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(AGENT_MATCH))
        .unwrap_or(false)
}

/// (pid, ppid, state) of every process.
fn processes() -> Vec<(u32, u32, char)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

fn pss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|t| kb_field(&t, "Pss:"))
        .or_else(|| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|t| kb_field(&t, "VmRSS:"))
        })
        .unwrap_or_default()
}

/// Live agent processes among the direct children of `pid`.
pub fn live_agents(pid: u32) -> u64 {
    agent_webkit_testkit::claude_children(pid).len() as u64
}

/// Reads the server's RSS and its descendants' PSS.
pub fn read(pid: u32) -> Result<Reading, String> {
    let server_rss = crate::scenarios::rss_bytes(pid)?;
    let all = processes();
    let mut frontier = vec![pid];
    let mut reading = Reading {
        server_rss,
        ..Reading::default()
    };
    while let Some(parent) = frontier.pop() {
        for &(child, ppid, state) in &all {
            if ppid != parent || matches!(state, 'Z' | 'X') {
                continue;
            }
            if parent == pid && is_agent(child) {
                reading.live_agents += 1;
            }
            reading.descendants += 1;
            reading.agents_pss += pss_bytes(child);
            frontier.push(child);
        }
    }
    Ok(reading)
}
