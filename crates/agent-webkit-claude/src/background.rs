//! Background work the CLI still runs between turns (docs/claude-cli-protocol.md §2.8): a
//! background shell or subagent started by a turn that has already sent its `result`. While
//! any runs, the session must not hibernate (stopping the CLI would stop the task).
//!
//! Tracked from the CLI's `system` frames: `task_started` adds a task; a terminal
//! `task_notification` or a `task_updated` whose patch carries a terminal status removes it;
//! `background_tasks_changed` replaces the set with the tasks it lists that are not terminal.

use std::collections::HashSet;

use serde_json::Value;

/// Task statuses after which a task no longer runs.
const TERMINAL: &[&str] = &["completed", "failed", "stopped", "killed"];

/// The tasks the CLI reported as started and not yet finished.
#[derive(Debug, Default)]
pub(crate) struct BackgroundWork {
    running: HashSet<String>,
}

impl BackgroundWork {
    /// Updates the set from one stdout frame (frames other than the task ones are ignored).
    pub(crate) fn observe(&mut self, frame: &Value) {
        if frame.get("type").and_then(Value::as_str) != Some("system") {
            return;
        }
        let task_id = || frame.get("task_id").and_then(Value::as_str);
        let terminal = |status: Option<&Value>| {
            status
                .and_then(Value::as_str)
                .is_some_and(|s| TERMINAL.contains(&s))
        };
        match frame.get("subtype").and_then(Value::as_str) {
            Some("task_started") => {
                if let Some(id) = task_id() {
                    self.running.insert(id.to_owned());
                }
            }
            Some("task_notification") => {
                if let Some(id) = task_id() {
                    // Every status a notification carries is terminal; an unknown one too, so a
                    // task is never held forever by a status we do not know.
                    self.running.remove(id);
                }
            }
            Some("task_updated") => {
                let patch_status = frame.get("patch").and_then(|p| p.get("status"));
                if let (Some(id), true) = (task_id(), terminal(patch_status)) {
                    self.running.remove(id);
                }
            }
            Some("background_tasks_changed") => {
                if let Some(tasks) = frame.get("tasks").and_then(Value::as_array) {
                    self.running = tasks
                        .iter()
                        .filter(|t| !terminal(t.get("status")))
                        .filter_map(|t| {
                            t.get("task_id")
                                .or_else(|| t.get("id"))
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .collect();
                }
            }
            _ => {}
        }
    }

    /// Whether any task still runs.
    pub(crate) fn is_busy(&self) -> bool {
        !self.running.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn system(subtype: &str, rest: Value) -> Value {
        let mut frame =
            json!({"type": "system", "subtype": subtype, "uuid": "u", "session_id": "s"});
        if let (Some(frame), Some(rest)) = (frame.as_object_mut(), rest.as_object()) {
            frame.extend(rest.clone());
        }
        frame
    }

    #[test]
    fn a_started_task_is_busy_until_its_notification() {
        let mut work = BackgroundWork::default();
        assert!(!work.is_busy());
        work.observe(&system(
            "task_started",
            json!({"task_id": "t1", "is_backgrounded": true}),
        ));
        work.observe(&system("task_started", json!({"task_id": "t2"})));
        assert!(work.is_busy());
        work.observe(&system(
            "task_notification",
            json!({"task_id": "t1", "status": "completed"}),
        ));
        assert!(work.is_busy(), "t2 still runs");
        work.observe(&system(
            "task_notification",
            json!({"task_id": "t2", "status": "failed"}),
        ));
        assert!(!work.is_busy());
    }

    #[test]
    fn a_terminal_task_update_ends_a_task_and_a_running_one_does_not() {
        let mut work = BackgroundWork::default();
        work.observe(&system("task_started", json!({"task_id": "t1"})));
        work.observe(&system(
            "task_updated",
            json!({"task_id": "t1", "patch": {"status": "running"}}),
        ));
        assert!(work.is_busy());
        work.observe(&system(
            "task_updated",
            json!({"task_id": "t1", "patch": {"status": "killed"}}),
        ));
        assert!(!work.is_busy());
    }

    #[test]
    fn the_background_task_list_replaces_the_set() {
        let mut work = BackgroundWork::default();
        work.observe(&system("task_started", json!({"task_id": "gone"})));
        work.observe(&system(
            "background_tasks_changed",
            json!({"tasks": [{"task_id": "b1", "status": "running"}, {"task_id": "b2", "status": "completed"}]}),
        ));
        assert!(work.is_busy());
        work.observe(&system("background_tasks_changed", json!({"tasks": []})));
        assert!(!work.is_busy());
    }

    #[test]
    fn other_frames_change_nothing() {
        let mut work = BackgroundWork::default();
        work.observe(&json!({"type": "assistant", "task_id": "t1", "subtype": "task_started"}));
        work.observe(&system(
            "session_state_changed",
            json!({"state": "running"}),
        ));
        assert!(!work.is_busy());
    }
}
