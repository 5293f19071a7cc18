//! Validated identifiers: [`AgentId`] and [`DeploymentId`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The name of an agent: 1–128 chars of `[A-Za-z0-9_.-]`, starting with a letter or digit,
/// never containing `..` (CONTRACT.md "Input rules"). Safe to use as a directory name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct AgentId(String);

impl AgentId {
    /// Longest accepted agent id, in bytes (all accepted chars are ASCII).
    pub const MAX_LEN: usize = 128;

    /// Validates `raw` against the contract's rules.
    pub fn new(raw: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::BadInput(format!("invalid agent id {raw:?}: {why}"));
        if raw.is_empty() {
            return Err(bad("must not be empty"));
        }
        if raw.len() > Self::MAX_LEN {
            return Err(bad("longer than 128 characters"));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        {
            return Err(bad(&format!(
                "character {c:?} is not allowed (use A-Z a-z 0-9 _ . -)"
            )));
        }
        if !raw.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(bad("must start with a letter or digit"));
        }
        if raw.contains("..") {
            return Err(bad("must not contain '..'"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// Lets maps keyed by `AgentId` be queried with `&str` (same Eq/Ord/Hash as the String).
impl std::borrow::Borrow<str> for AgentId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for AgentId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for AgentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::new(&raw).map_err(serde::de::Error::custom)
    }
}

/// `dep_` + a UUIDv7 in simple (32 lowercase hex) form: ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DeploymentId(String);

impl DeploymentId {
    /// A fresh id. UUIDv7 carries a millisecond timestamp plus random bits, so ids made by
    /// different processes never collide and sort by time.
    pub fn generate() -> Self {
        Self(format!("dep_{}", uuid::Uuid::now_v7().simple()))
    }

    /// Parses `dep_<32 hex>` (a full UUIDv7 in simple form).
    pub fn parse(raw: &str) -> Result<Self, Error> {
        let bad = || {
            Error::BadInput(format!(
                "invalid deployment id {raw:?}: expected dep_ followed by 32 lowercase hex digits"
            ))
        };
        let hex = raw.strip_prefix("dep_").ok_or_else(bad)?;
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeploymentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_id_rules() {
        for ok in [
            "a",
            "trading_agent_alpha",
            "A1.b-c_d",
            "9lives",
            &"x".repeat(128),
        ] {
            assert!(AgentId::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "_a",
            ".a",
            "-a",
            "a..b",
            "a/b",
            "a b",
            "a\0b",
            "é",
            "../etc",
            &"x".repeat(129),
        ] {
            let err = AgentId::new(bad).unwrap_err();
            assert!(matches!(err, Error::BadInput(_)), "{bad:?}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn deployment_ids_are_unique_sorted_and_parse() {
        let ids: Vec<_> = (0..1000).map(|_| DeploymentId::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        for id in &ids {
            assert_eq!(id.as_str().len(), 36);
            assert_eq!(DeploymentId::parse(id.as_str()).unwrap(), *id);
        }
        assert!(DeploymentId::parse("dep_xyz").is_err());
        assert!(DeploymentId::parse("0190f0a1b2c3d4e5f60718293a4b5c6d").is_err());
        assert!(DeploymentId::parse("dep_0190F0A1B2C3D4E5F60718293A4B5C6D").is_err());
    }
}
