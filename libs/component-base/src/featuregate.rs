//! Feature gates: upstream's `--feature-gates=Name=true,Other=false` flag, shared by every
//! component as upstream shares one registry, so a gate meant for one component is accepted by
//! all of them.
//!
//! Only gates whose behaviour rkube implements are known; defaults and stages are upstream
//! v1.33's, the version the apiserver reports. Naming any other gate is refused, as upstream
//! refuses a name it does not know: accepting a gate that changes nothing would be a lie.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Alpha,
    Beta,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Alpha => "ALPHA",
            Stage::Beta => "BETA",
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub default: bool,
    pub stage: Stage,
    /// Which component acts on it, for `--help` and the docs.
    pub used_by: &'static str,
}

/// `statefulset.spec.updateStrategy.rollingUpdate.maxUnavailable` is honoured (apiserver keeps
/// the field, the StatefulSet controller replaces that many pods at once).
pub const MAX_UNAVAILABLE_STATEFUL_SET: &str = "MaxUnavailableStatefulSet";
/// The scheduler pops pods from the backoff queue while the active queue is empty.
pub const SCHEDULER_POP_FROM_BACKOFF_Q: &str = "SchedulerPopFromBackoffQ";

pub const KNOWN: &[Spec] = &[
    Spec {
        name: MAX_UNAVAILABLE_STATEFUL_SET,
        default: false,
        stage: Stage::Alpha,
        used_by: "apiserver, controller-manager",
    },
    Spec { name: SCHEDULER_POP_FROM_BACKOFF_Q, default: true, stage: Stage::Beta, used_by: "scheduler" },
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unrecognized feature gate: {0}")]
    Unknown(String),
    #[error("missing bool value for {0}")]
    MissingValue(String),
    #[error("invalid value of {name}={value}, err: invalid syntax")]
    InvalidValue { name: String, value: String },
}

/// The gates in force: every known gate at its default unless set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureGates {
    set: BTreeMap<&'static str, bool>,
}

impl FeatureGates {
    /// Parses the flag's value: comma-separated `Name=bool` pairs; spaces around them and empty
    /// pairs are ignored. The whole value is refused when any pair is wrong.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let mut pairs = BTreeMap::new();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, v) = match pair.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => return Err(Error::MissingValue(pair.to_string())),
            };
            let on = parse_bool(v).ok_or_else(|| Error::InvalidValue { name: name.into(), value: v.into() })?;
            pairs.insert(name.to_string(), on);
        }
        Self::from_map(&pairs)
    }

    /// The gates from a name → bool map (a config file's `featureGates`).
    pub fn from_map(pairs: &BTreeMap<String, bool>) -> Result<Self, Error> {
        let mut set = BTreeMap::new();
        for (name, &on) in pairs {
            let spec = KNOWN.iter().find(|s| s.name == name).ok_or_else(|| Error::Unknown(name.clone()))?;
            set.insert(spec.name, on);
        }
        Ok(Self { set })
    }

    pub fn enabled(&self, name: &str) -> bool {
        match self.set.get(name) {
            Some(&on) => on,
            None => KNOWN.iter().find(|s| s.name == name).is_some_and(|s| s.default),
        }
    }

    /// The flag value that reproduces the gates set explicitly (`A=true,B=false`).
    pub fn to_flag(&self) -> String {
        self.set.iter().map(|(n, on)| format!("{n}={on}")).collect::<Vec<_>>().join(",")
    }

    /// One line per known gate, for `--help`.
    pub fn help() -> String {
        let mut s = String::from(
            "A set of key=value pairs that describe feature gates for alpha/experimental features. Options are:",
        );
        for spec in KNOWN {
            s.push_str(&format!(
                "\n{}=true|false ({} - default={}; {})",
                spec.name, spec.stage, spec.default, spec.used_by
            ));
        }
        s
    }
}

/// Go's strconv.ParseBool, which upstream's flag uses.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

impl std::str::FromStr for FeatureGates {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_upstream_v1_33s() {
        let g = FeatureGates::default();
        assert!(!g.enabled(MAX_UNAVAILABLE_STATEFUL_SET));
        assert!(g.enabled(SCHEDULER_POP_FROM_BACKOFF_Q));
        assert!(!g.enabled("NoSuchGate"));
    }

    #[test]
    fn pairs_override_defaults() {
        let g = FeatureGates::parse(" MaxUnavailableStatefulSet=true , SchedulerPopFromBackoffQ=false,").unwrap();
        assert!(g.enabled(MAX_UNAVAILABLE_STATEFUL_SET));
        assert!(!g.enabled(SCHEDULER_POP_FROM_BACKOFF_Q));
        assert_eq!(g.to_flag(), "MaxUnavailableStatefulSet=true,SchedulerPopFromBackoffQ=false");
        assert_eq!(FeatureGates::parse(&g.to_flag()).unwrap(), g);
    }

    #[test]
    fn empty_value_is_all_defaults() {
        assert_eq!(FeatureGates::parse("").unwrap(), FeatureGates::default());
        assert_eq!(FeatureGates::default().to_flag(), "");
    }

    #[test]
    fn go_bool_spellings_are_accepted() {
        assert!(FeatureGates::parse("MaxUnavailableStatefulSet=1").unwrap().enabled(MAX_UNAVAILABLE_STATEFUL_SET));
        assert!(FeatureGates::parse("MaxUnavailableStatefulSet=T").unwrap().enabled(MAX_UNAVAILABLE_STATEFUL_SET));
        assert!(!FeatureGates::parse("SchedulerPopFromBackoffQ=False").unwrap().enabled(SCHEDULER_POP_FROM_BACKOFF_Q));
    }

    #[test]
    fn bad_values_are_refused_with_upstreams_messages() {
        let cases = [
            ("Foo=true", "unrecognized feature gate: Foo"),
            ("MaxUnavailableStatefulSet", "missing bool value for MaxUnavailableStatefulSet"),
            ("MaxUnavailableStatefulSet=yes", "invalid value of MaxUnavailableStatefulSet=yes, err: invalid syntax"),
            // One bad pair spoils the whole value.
            ("SchedulerPopFromBackoffQ=false,Foo=true", "unrecognized feature gate: Foo"),
        ];
        for (value, want) in cases {
            assert_eq!(FeatureGates::parse(value).unwrap_err().to_string(), want, "{value}");
        }
    }

    #[test]
    fn help_lists_every_known_gate() {
        let h = FeatureGates::help();
        for spec in KNOWN {
            assert!(h.contains(spec.name), "{h}");
        }
        assert!(h.contains("MaxUnavailableStatefulSet=true|false (ALPHA - default=false"));
    }
}
