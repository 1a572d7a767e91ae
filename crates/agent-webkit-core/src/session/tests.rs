//! Tests of the session loop with a scripted agent.
