//! The CLI's `get_context_usage` control answer → core's [`ContextUsage`].
//!
//! The CLI (2.1.x) answers `{categories: [{id, name, tokens, kind, isDeferred?, color}],
//! totalTokens, maxTokens, rawMaxTokens, percentage, model, apiUsage, messageBreakdown,
//! gridRows, ...}` in about a second (it counts tokens). `totalTokens` is the sum of the
//! categories of kind `used`; the others (`deferred` tools, the `buffer` kept for
//! auto-compaction, `free` space) are not in the context, so only the `used` ones are passed on.

use agent_webkit_core::context_usage::{ContextCategory, ContextUsage};
use serde_json::Value;

/// Categories not counted in the context (when the CLI gives no `kind`).
const NOT_IN_CONTEXT: &[&str] = &["free_space", "autocompact_buffer"];

/// Normalises the CLI's answer.
pub(crate) fn normalise(answer: &Value) -> ContextUsage {
    let number = |name: &str| answer.get(name).and_then(Value::as_u64).unwrap_or(0);
    let categories = answer
        .get("categories")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|c| counted(c))
                .map(|c| ContextCategory {
                    name: c
                        .get("name")
                        .or_else(|| c.get("id"))
                        .and_then(Value::as_str)
                        .unwrap_or("other")
                        .to_owned(),
                    tokens: c.get("tokens").and_then(Value::as_u64).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    ContextUsage {
        model: answer
            .get("model")
            .and_then(Value::as_str)
            .map(str::to_owned),
        total_tokens: number("totalTokens"),
        max_tokens: number("maxTokens"),
        percentage: answer
            .get("percentage")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        categories,
        last_api_usage: answer.get("apiUsage").cloned().unwrap_or(Value::Null),
    }
}

fn counted(category: &Value) -> bool {
    match category.get("kind").and_then(Value::as_str) {
        Some(kind) => kind == "used",
        None => {
            category.get("isDeferred") != Some(&Value::Bool(true))
                && !category
                    .get("id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| NOT_IN_CONTEXT.contains(&id))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_what_is_in_the_context() {
        // Trimmed from a real 2.1.330 answer against the mock API.
        let answer = json!({"categories":[
            {"id":"system_tools","name":"System tools","tokens":10222,"kind":"used"},
            {"id":"system_tools_deferred","name":"System tools (deferred)","tokens":12464,"isDeferred":true,"kind":"deferred"},
            {"id":"skills","name":"Skills","tokens":2067,"kind":"used"},
            {"id":"autocompact_buffer","name":"Autocompact buffer","tokens":33000,"kind":"buffer"},
            {"id":"free_space","name":"Free space","tokens":954711,"kind":"free"}],
            "totalTokens":12289,"maxTokens":1000000,"rawMaxTokens":1000000,"percentage":1,
            "apiUsage":{"input_tokens":10,"output_tokens":3},"model":"claude-opus-5-5"});
        let usage = normalise(&answer);
        assert_eq!(usage.model.as_deref(), Some("claude-opus-5-5"));
        assert_eq!((usage.total_tokens, usage.max_tokens), (12289, 1_000_000));
        let names: Vec<_> = usage.categories.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["System tools", "Skills"]);
        let sum: u64 = usage.categories.iter().map(|c| c.tokens).sum();
        assert_eq!(sum, usage.total_tokens);
        assert_eq!(usage.last_api_usage["input_tokens"], 10);
        let no_kind = json!({"categories":[{"id":"free_space","tokens":5},{"id":"x","tokens":1}]});
        assert_eq!(normalise(&no_kind).categories.len(), 1);
    }
}
