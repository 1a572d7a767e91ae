//! `fake-claude`: a stand-in for the `claude` CLI speaking its stream-json control protocol.
//! See `agent_webkit_testkit::fake_claude` for the behaviour.

fn main() {
    std::process::exit(agent_webkit_testkit::fake_claude::run());
}
