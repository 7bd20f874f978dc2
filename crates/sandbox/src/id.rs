//! Identifiers. Sandbox ids have the same form as E2B's (20 characters of `[a-z0-9]`), so
//! E2B clients accept them unchanged; execution ids only need to be unique.

use std::fmt;

use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Fills `n` characters from the 36-letter alphabet with rejection sampling (no modulo bias).
pub(crate) fn random_chars(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).expect("the kernel's random source is available");
        for b in buf {
            // 252 = 7 * 36: bytes at or above it would bias the first letters.
            if b < 252 {
                out.push(ALPHABET[usize::from(b % 36)] as char);
                if out.len() == n {
                    break;
                }
            }
        }
    }
    out
}

/// A sandbox id: exactly 20 characters of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SandboxId(String);

impl SandboxId {
    pub const LEN: usize = 20;

    pub fn generate() -> Self {
        Self(random_chars(Self::LEN))
    }

    /// Parses an id, checking its form. The error says what a valid id looks like.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.len() == Self::LEN
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId(s.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for SandboxId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<SandboxId> for String {
    fn from(id: SandboxId) -> Self {
        id.0
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a sandbox id: ids are exactly 20 characters of [a-z0-9]")]
pub struct InvalidId(pub String);

/// The id of one process execution (`ex_` + 16 characters).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExecutionId(String);

impl ExecutionId {
    pub fn generate() -> Self {
        Self(format!("ex_{}", random_chars(16)))
    }
    pub fn from_string(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_the_e2b_form() {
        for _ in 0..200 {
            let id = SandboxId::generate();
            assert!(SandboxId::parse(id.as_str()).is_ok(), "{id}");
        }
    }

    #[test]
    fn ids_of_other_forms_are_rejected() {
        for bad in [
            "",
            "abc",
            "ABCDEFGHIJKLMNOPQRST",
            "abcdefghijklmnopqrs_",
            "abcdefghijklmnopqrstu",
        ] {
            assert!(SandboxId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generated_ids_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            seen.extend(SandboxId::generate().as_str().chars());
        }
        assert_eq!(seen.len(), 36);
    }
}
