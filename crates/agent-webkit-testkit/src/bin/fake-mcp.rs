//! `fake-mcp`: a tiny stdio MCP server for the real-CLI MCP tests.
//! See `agent_webkit_testkit::fake_mcp` for the behaviour.

fn main() {
    std::process::exit(agent_webkit_testkit::fake_mcp::run());
}
