//! Typed CRD fields that Kubernetes types do not cover by themselves: timestamps converted
//! from the trust core's clock, values that older objects wrote as `""`, and the schemas of
//! `k8s_openapi` types used inside our CRDs (`Condition`, `Time`), which `k8s_openapi`
//! only provides behind a feature that would compile schemas for every Kubernetes type.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde::de::{self, DeserializeOwned};
use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;

/// A timestamp for a CRD field, at whole seconds (the precision `metav1.Time` keeps on the
/// wire: a value with sub-second digits would read back different and cause a write at every
/// reconcile).
pub fn time(t: OffsetDateTime) -> Time {
    Time(
        Timestamp::from_second(t.unix_timestamp()).unwrap_or(if t.unix_timestamp() < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        }),
    )
}

/// The trust core's clock value for a CRD timestamp.
pub fn offset(t: &Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.0.as_second()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Parses an RFC 3339 timestamp (as the trust core prints certificate validity).
pub fn parse_time(rfc3339: &str) -> Option<Time> {
    rfc3339.parse::<Timestamp>().ok().map(Time)
}

/// Deserializes an optional field that older objects wrote as `""` when unset: `""`, `null`
/// and an absent field all read as `None`.
pub fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Option::<serde_json::Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(de::Error::custom),
    }
}

/// The schema of a `metav1.Time`.
pub fn time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "format": "date-time",
    })
}

/// The schema of a list of `metav1.Condition`, with the validation upstream gives it and
/// list-map semantics keyed by `type` (one condition per type).
pub fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "message": { "type": "string", "maxLength": 32768 },
                "observedGeneration": { "type": "integer", "format": "int64", "minimum": 0 },
                "reason": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
                },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "type": {
                    "type": "string",
                    "maxLength": 316,
                    "pattern": "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
                },
            },
        },
    })
}

/// The schema of a key algorithm (the trust core's spellings).
pub fn key_algorithm_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = federator_core::key::KeyAlgorithm::ALL
        .iter()
        .map(|a| a.as_str())
        .collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names,
    })
}

/// The schema of an istiod version (`1.29.2`, `1.30.0-rc.0`, `1.31-dev`: what
/// [`federator_core::istiod::IstiodVersion`] writes).
pub fn istiod_version_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": "^[0-9]+\\.[0-9]+(\\.[0-9]+)?(-[0-9A-Za-z_.-]+)?$",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Holder {
        #[serde(default, deserialize_with = "empty_as_none")]
        at: Option<Time>,
    }

    #[test]
    fn empty_strings_of_older_objects_read_as_absent() {
        let h: Holder = serde_json::from_str(r#"{"at": ""}"#).unwrap();
        assert_eq!(h.at, None);
        let h: Holder = serde_json::from_str("{}").unwrap();
        assert_eq!(h.at, None);
        let h: Holder = serde_json::from_str(r#"{"at": null}"#).unwrap();
        assert_eq!(h.at, None);
        let h: Holder = serde_json::from_str(r#"{"at": "2026-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(h.at, parse_time("2026-01-01T00:00:00Z"));
        // Sub-second digits that older versions wrote are accepted too.
        let h: Holder = serde_json::from_str(r#"{"at": "2026-01-01T00:00:00.123456Z"}"#).unwrap();
        assert!(h.at.is_some());
        assert!(serde_json::from_str::<Holder>(r#"{"at": "yesterday"}"#).is_err());
    }

    #[test]
    fn times_are_whole_seconds_and_round_trip() {
        let now = OffsetDateTime::now_utc();
        let t = time(now);
        assert_eq!(offset(&t).unix_timestamp(), now.unix_timestamp());
        let back: Time = serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t, "what is written reads back equal");
    }
}
