//! Examples of embedding agent-webkit; see the `[[example]]` targets.
