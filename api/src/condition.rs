//! Status conditions, Kubernetes style (`type`, `status`, `reason`, `message`,
//! `lastTransitionTime`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One condition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default)]
    pub last_transition_time: String,
}

/// Sets a condition in a list, keeping `lastTransitionTime` when the status is unchanged.
/// Returns the new list; equal input gives equal output, so callers can skip no-op writes.
pub fn set(
    conditions: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: &str,
) -> Vec<Condition> {
    let status = if ok { "True" } else { "False" };
    let mut out: Vec<Condition> = conditions
        .iter()
        .filter(|c| c.type_ != type_)
        .cloned()
        .collect();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_owned());
    out.push(Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time,
    });
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Whether a condition is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_transition_time_when_unchanged() {
        let a = set(&[], "Ready", true, "Ok", "", "t1");
        let b = set(&a, "Ready", true, "Ok", "still", "t2");
        assert_eq!(b[0].last_transition_time, "t1");
        let c = set(&b, "Ready", false, "Broken", "", "t3");
        assert_eq!(c[0].last_transition_time, "t3");
        assert!(is_true(&b, "Ready") && !is_true(&c, "Ready"));
    }
}
