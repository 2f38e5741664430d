//! Durations in CRD fields, written the way Kubernetes and Go write them (`720h`, `1h30m`,
//! `45s`, `500ms`), as [`k8s_openapi`] writes `metav1.Duration`.
//!
//! The text form is parsed and printed by [`federator_core::duration`], the one parser of the
//! workspace; the CRD schema carries the same grammar as a `pattern`, so the API server
//! refuses what the hub could not read.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The grammar of [`federator_core::duration::parse`], for the CRD schema.
pub const PATTERN: &str = "^([0-9]+(h|m|s|ms))+$";

/// A duration that serializes as Go-style text (`720h`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&federator_core::duration::format(self.0))
    }
}

impl FromStr for GoDuration {
    type Err = federator_core::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        federator_core::duration::parse(s).map(Self)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

impl schemars::JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": PATTERN,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_text_form() {
        let d: GoDuration = serde_json::from_str("\"720h\"").unwrap();
        assert_eq!(d.get(), Duration::from_secs(720 * 3600));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"720h\"");
        let d: GoDuration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.to_string(), "1h30m");
        for bad in ["\"\"", "\"10\"", "\"1.5h\"", "\"-5s\"", "5"] {
            assert!(serde_json::from_str::<GoDuration>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schema_pattern_matches_the_parser() {
        // Not a regex engine: check the pattern's alternatives are the parser's units.
        for unit in ["h", "m", "s", "ms"] {
            assert!(PATTERN.contains(unit));
            assert!(format!("1{unit}").parse::<GoDuration>().is_ok());
        }
    }
}
