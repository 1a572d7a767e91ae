//! Tests of the registry with a scripted agent.
