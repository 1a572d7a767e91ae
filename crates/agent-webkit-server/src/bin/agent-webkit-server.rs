//! The `agent-webkit-server` binary; everything but the allocator is in the library.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: the event path allocates and frees small buffers
/// at a high rate (glibc malloc was a quarter of the server's CPU in the fan-out profile), and
/// it returns freed pages to the OS, which keeps the RSS of idle sessions honest.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    agent_webkit_server::main()
}
