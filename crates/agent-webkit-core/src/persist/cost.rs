//! [`CostTotals`]: a session's cumulative usage and cost per model, summed from what its agent
//! reports in each `result` (the CLI's own estimates, not a bill).
//!
//! The Claude CLI reports, in every `result`, `modelUsage` (per model: `inputTokens`,
//! `outputTokens`, `cacheReadInputTokens`, `cacheCreationInputTokens`, `costUSD`) and
//! `total_cost_usd`, both **cumulative over the CLI process** (a second turn reports the
//! first turn's numbers plus its own), while `usage` is the turn's own. A session outlives its
//! agent processes (hibernation, restart, failover: each starts a new one, whose counters
//! start again from zero, since a resumed CLI runs in a fresh config directory), so the
//! session adds each result's *increase* over the same process's previous result
//! ([`ProcessCounters`], reset when a new agent process starts). A counter that went down is
//! taken as a process that started from zero. The sums are persisted with the session's
//! activity, so they survive restarts and take-overs.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Tokens and cost of one model over a session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct ModelCost {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_input_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_input_tokens: u64,
    /// The agent's cost estimate, USD.
    pub cost_usd: f64,
}

impl ModelCost {
    /// One model's entry of a CLI `modelUsage` object (camelCase fields).
    fn from_cli(value: &Value) -> Self {
        let n = |name: &str| value.get(name).and_then(Value::as_u64).unwrap_or(0);
        Self {
            input_tokens: n("inputTokens"),
            output_tokens: n("outputTokens"),
            cache_read_input_tokens: n("cacheReadInputTokens"),
            cache_creation_input_tokens: n("cacheCreationInputTokens"),
            cost_usd: finite_cost(value.get("costUSD")),
        }
    }

    /// Whether any counter is below `earlier`'s (the process started again).
    fn went_down_from(&self, earlier: &Self) -> bool {
        self.input_tokens < earlier.input_tokens
            || self.output_tokens < earlier.output_tokens
            || self.cache_read_input_tokens < earlier.cache_read_input_tokens
            || self.cache_creation_input_tokens < earlier.cache_creation_input_tokens
            || self.cost_usd < earlier.cost_usd
    }

    fn add_difference(&mut self, now: &Self, before: &Self) {
        self.input_tokens = self
            .input_tokens
            .saturating_add(now.input_tokens - before.input_tokens);
        self.output_tokens = self
            .output_tokens
            .saturating_add(now.output_tokens - before.output_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(now.cache_read_input_tokens - before.cache_read_input_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(now.cache_creation_input_tokens - before.cache_creation_input_tokens);
        self.cost_usd += now.cost_usd - before.cost_usd;
    }
}

/// A session's cumulative usage and cost: the `cost` of `GET /sessions/{id}` and of the
/// `usage` event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct CostTotals {
    /// The agent's cost estimate over the whole session, USD.
    pub total_cost_usd: f64,
    /// Per model (the agent's model names).
    pub by_model: BTreeMap<String, ModelCost>,
}

// Sums of finite, non-negative numbers: equality is total in practice.
impl Eq for CostTotals {}

impl CostTotals {
    /// Whether nothing was ever reported.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty() && self.total_cost_usd == 0.0
    }

    /// Adds what a `result`'s data (its fields other than `session_id` and `subtype`) reports
    /// beyond `seen` (the same agent process's counters at its previous result), and updates
    /// `seen`. Returns whether the result reported usage at all.
    pub(crate) fn add_result(
        &mut self,
        result: &Map<String, Value>,
        seen: &mut ProcessCounters,
    ) -> bool {
        let mut reported = false;
        let mut models_cost = 0.0;
        if let Some(models) = result.get("modelUsage").and_then(Value::as_object) {
            for (model, value) in models {
                reported = true;
                let now = ModelCost::from_cli(value);
                let before = seen.by_model.get(model).cloned().unwrap_or_default();
                let before = if now.went_down_from(&before) {
                    ModelCost::default()
                } else {
                    before
                };
                models_cost += now.cost_usd - before.cost_usd;
                self.by_model
                    .entry(model.clone())
                    .or_default()
                    .add_difference(&now, &before);
                seen.by_model.insert(model.clone(), now);
            }
        }
        match result.get("total_cost_usd").map(|v| finite_cost(Some(v))) {
            Some(now) => {
                reported = true;
                let before = if now < seen.total_cost_usd {
                    0.0
                } else {
                    seen.total_cost_usd
                };
                self.total_cost_usd += now - before;
                seen.total_cost_usd = now;
            }
            None => self.total_cost_usd += models_cost,
        }
        reported || result.get("usage").is_some_and(Value::is_object)
    }
}

/// The counters one agent process reported in its last `result` (not persisted: a new process
/// starts from zero).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProcessCounters {
    by_model: HashMap<String, ModelCost>,
    total_cost_usd: f64,
}

fn finite_cost(value: Option<&Value>) -> f64 {
    value
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c >= 0.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn result(input: u64, output: u64, cost: f64) -> Map<String, Value> {
        json!({
            "total_cost_usd": cost,
            "usage": {"input_tokens": 10, "output_tokens": 1},
            "modelUsage": {"m": {"inputTokens": input, "outputTokens": output,
                                 "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                                 "costUSD": cost}},
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn cumulative_counters_are_added_once_across_processes() {
        let mut totals = CostTotals::default();
        let mut seen = ProcessCounters::default();
        // One process: cumulative 10/2, then 20/5.
        assert!(totals.add_result(&result(10, 2, 0.1), &mut seen));
        assert!(totals.add_result(&result(20, 5, 0.25), &mut seen));
        // A new process (counters reset by the session), then one whose counters went down.
        let mut seen = ProcessCounters::default();
        totals.add_result(&result(10, 3, 0.05), &mut seen);
        let mut stale = seen.clone();
        stale.by_model.get_mut("m").unwrap().input_tokens = 1000;
        totals.add_result(&result(7, 1, 0.01), &mut stale);
        let m = &totals.by_model["m"];
        assert_eq!((m.input_tokens, m.output_tokens), (20 + 10 + 7, 5 + 3 + 1));
        assert!((m.cost_usd - 0.31).abs() < 1e-12, "{m:?}");
        assert!((totals.total_cost_usd - 0.31).abs() < 1e-12, "{totals:?}");
        assert!(!totals.add_result(&Map::new(), &mut seen));
    }
}
