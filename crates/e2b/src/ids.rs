//! E2B's naming conventions: sandbox ids, envd hosts and routing headers, API keys,
//! idempotency keys and template references (e2b-compat.md §1.1, §1.2, §2.1).
//!
//! Why this module exists: E2B's SDKs and edge proxy take these forms for granted — a
//! sandbox id must fit in a host name label (`{port}-{sandboxID}.{domain}`), envd traffic
//! is routed by `E2b-Sandbox-Id`/`E2b-Sandbox-Port` and authorised by `X-Access-Token` — so
//! the server must mint ids the proxy accepts and read the hosts and headers the SDKs send.
//! Only what the spec states is encoded here.

use std::fmt;

/// envd's default port, also what the SDKs send in `E2b-Sandbox-Port`.
pub const ENVD_PORT: u16 = 49983;
/// Routing header: the sandbox an envd request is for.
pub const SANDBOX_ID_HEADER: &str = "E2b-Sandbox-Id";
/// Routing header: the sandbox port an envd request is for.
pub const SANDBOX_PORT_HEADER: &str = "E2b-Sandbox-Port";
/// Header carrying the sandbox's `envdAccessToken` on every envd request.
pub const ACCESS_TOKEN_HEADER: &str = "X-Access-Token";
/// Header carrying the sandbox's `trafficAccessToken` for custom ports of private sandboxes.
pub const TRAFFIC_ACCESS_TOKEN_HEADER: &str = "e2b-traffic-access-token";
/// Header with the keepalive interval, in seconds, of a streaming RPC (envd default 90).
pub const KEEPALIVE_PING_INTERVAL_HEADER: &str = "Keepalive-Ping-Interval";
/// The id the SDKs fabricate in debug mode (no control plane involved).
pub const DEBUG_SANDBOX_ID: &str = "debug_sandbox_id";
/// Length of the ids E2B mints.
pub const SANDBOX_ID_LEN: usize = 20;
/// The default template of the SDKs.
pub const DEFAULT_TEMPLATE: &str = "base";
/// The tag a template reference without one means.
pub const DEFAULT_TAG: &str = "default";
/// Domains E2B runs itself: envd is reached at `https://sandbox.{domain}` there.
pub const E2B_DOMAINS: [&str; 7] = [
    "e2b.app",
    "e2b.dev",
    "e2b.pro",
    "e2b-staging.dev",
    "e2b-tango.dev",
    "e2b-juliett.dev",
    "foxtrot-2.e2b.dev",
];

/// Why a name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("invalid sandbox id {0:?}: expected one or more of [a-z0-9]")]
    SandboxId(String),
    #[error("invalid idempotency key {0:?}: expected 1 to 255 of [a-z0-9-]")]
    IdempotencyKey(String),
    #[error("invalid template reference {0:?}: expected [namespace/]alias[:tag]")]
    TemplateRef(String),
    #[error("invalid envd host {0:?}: expected {{port}}-{{sandboxID}}.{{domain}}")]
    Host(String),
}

fn lower_alnum(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A sandbox id: one or more of `[a-z0-9]` (the proxy rejects anything else; E2B mints
/// [`SANDBOX_ID_LEN`] characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SandboxId(String);

impl SandboxId {
    /// Checks `id` against `^[a-z0-9]+$`.
    pub fn parse(id: &str) -> Result<SandboxId, IdError> {
        if lower_alnum(id) {
            Ok(SandboxId(id.to_string()))
        } else {
            Err(IdError::SandboxId(id.to_string()))
        }
    }

    /// A fresh random id of [`SANDBOX_ID_LEN`] characters from `[a-z0-9]`, uniform (bytes
    /// that would bias the draw are discarded).
    pub fn generate() -> SandboxId {
        const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        // 252 = 7 * 36: bytes at or above it would favour the first letters.
        const LIMIT: u8 = 252;
        let mut id = String::with_capacity(SANDBOX_ID_LEN);
        let mut buf = [0u8; 32];
        while id.len() < SANDBOX_ID_LEN {
            getrandom::fill(&mut buf).expect("the kernel's random source is available");
            for b in buf {
                if b < LIMIT && id.len() < SANDBOX_ID_LEN {
                    id.push(char::from(ALPHABET[usize::from(b % 36)]));
                }
            }
        }
        SandboxId(id)
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

/// An envd host as the SDKs build it: `{port}-{sandboxID}.{domain}`, or the very old form
/// with a client id, `{port}-{sandboxID}-{clientID}.{domain}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvdHost {
    pub port: u16,
    pub sandbox_id: SandboxId,
    /// Only in the old form.
    pub client_id: Option<String>,
    pub domain: String,
}

impl EnvdHost {
    /// Reads a `Host` value (a trailing `:port` of the URL is ignored).
    pub fn parse(host: &str) -> Result<EnvdHost, IdError> {
        let bad = || IdError::Host(host.to_string());
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        let (label, domain) = name.split_once('.').ok_or_else(bad)?;
        if domain.is_empty() {
            return Err(bad());
        }
        let mut parts = label.split('-');
        let port = parts.next().ok_or_else(bad)?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        let sandbox_id = SandboxId::parse(parts.next().ok_or_else(bad)?).map_err(|_| bad())?;
        let client_id = match parts.next() {
            None => None,
            Some(c) if !c.is_empty() => Some(c.to_string()),
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(EnvdHost {
            port,
            sandbox_id,
            client_id,
            domain: domain.to_string(),
        })
    }

    /// The SDK's `get_host(port)`: `{port}-{sandboxID}.{domain}`.
    pub fn format(port: u16, sandbox_id: &SandboxId, domain: &str) -> String {
        format!("{port}-{sandbox_id}.{domain}")
    }
}

/// Whether `domain` is one of E2B's own ([`E2B_DOMAINS`]).
pub fn is_e2b_domain(domain: &str) -> bool {
    E2B_DOMAINS.contains(&domain)
}

/// The envd base URL the SDKs choose when no `sandbox_url` is configured and debug is off:
/// `https://sandbox.{domain}` for E2B's domains (routing by header), else
/// `https://{port}-{sandboxID}.{domain}`.
pub fn envd_url(domain: &str, sandbox_id: &SandboxId, port: u16) -> String {
    if is_e2b_domain(domain) {
        format!("https://sandbox.{domain}")
    } else {
        format!("https://{}", EnvdHost::format(port, sandbox_id, domain))
    }
}

/// Whether `key` has the shape of an E2B API key, `e2b_` + lowercase hex. SDK 2.63 and
/// npm 2.51 no longer check this; a server may use it to refuse obvious mistakes.
pub fn looks_like_api_key(key: &str) -> bool {
    key.strip_prefix("e2b_").is_some_and(|hex| {
        !hex.is_empty()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Checks an `Idempotency-Key` as the SDK does: 1 to 255 of `[a-z0-9-]`.
pub fn validate_idempotency_key(key: &str) -> Result<(), IdError> {
    let ok = (1..=255).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(IdError::IdempotencyKey(key.to_string()))
    }
}

/// Whether `tag` is a valid template tag, `^[a-z0-9-_.]+$`.
pub fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// A template reference, `namespace/alias:tag` with namespace and tag optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    pub namespace: Option<String>,
    pub alias: String,
    /// Explicit tag, if one was given; see [`TemplateRef::tag`].
    pub tag: Option<String>,
}

impl TemplateRef {
    /// Reads `[namespace/]alias[:tag]`; the tag must match `^[a-z0-9-_.]+$`.
    pub fn parse(text: &str) -> Result<TemplateRef, IdError> {
        let bad = || IdError::TemplateRef(text.to_string());
        let (rest, tag) = match text.rsplit_once(':') {
            Some((rest, tag)) if is_valid_tag(tag) => (rest, Some(tag.to_string())),
            Some(_) => return Err(bad()),
            None => (text, None),
        };
        let (namespace, alias) = match rest.split_once('/') {
            Some((ns, alias)) if !ns.is_empty() => (Some(ns.to_string()), alias),
            Some(_) => return Err(bad()),
            None => (None, rest),
        };
        if alias.is_empty() || alias.contains('/') {
            return Err(bad());
        }
        Ok(TemplateRef {
            namespace,
            alias: alias.to_string(),
            tag,
        })
    }

    /// The tag, [`DEFAULT_TAG`] when none was given.
    pub fn tag(&self) -> &str {
        self.tag.as_deref().unwrap_or(DEFAULT_TAG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_id_rule() {
        assert_eq!(
            SandboxId::parse("i1a2b3c4d5e6f7g8h9j0").unwrap().as_str(),
            "i1a2b3c4d5e6f7g8h9j0"
        );
        assert!(SandboxId::parse("abc").is_ok());
        for bad in ["", "ABC", "a-b", "a_b", "a.b", DEBUG_SANDBOX_ID, "é"] {
            assert_eq!(SandboxId::parse(bad), Err(IdError::SandboxId(bad.into())));
        }
    }

    #[test]
    fn generated_ids_fit_the_rule() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let id = SandboxId::generate();
            assert_eq!(id.as_str().len(), SANDBOX_ID_LEN);
            assert_eq!(SandboxId::parse(id.as_str()).as_ref(), Ok(&id));
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn envd_host_forms() {
        let h = EnvdHost::parse("49983-abc123.e2b.app").unwrap();
        assert_eq!(
            h,
            EnvdHost {
                port: 49983,
                sandbox_id: SandboxId::parse("abc123").unwrap(),
                client_id: None,
                domain: "e2b.app".into()
            }
        );
        let old = EnvdHost::parse("49983-abc123-6532622b.e2b.dev").unwrap();
        assert_eq!(old.client_id.as_deref(), Some("6532622b"));
        assert_eq!(old.domain, "e2b.dev");
        let with_port = EnvdHost::parse("8080-abc.local.test:3002").unwrap();
        assert_eq!(
            (with_port.port, with_port.domain.as_str()),
            (8080, "local.test")
        );
        for bad in [
            "localhost",
            "sandbox.e2b.app",
            "abc.e2b.app",
            "49983-.e2b.app",
            "49983-ABC.e2b.app",
            "99999-abc.e2b.app",
            "49983-abc-.e2b.app",
            "49983-abc-c-d.e2b.app",
            "49983-abc.",
        ] {
            assert_eq!(
                EnvdHost::parse(bad),
                Err(IdError::Host(bad.into())),
                "{bad}"
            );
        }
        let id = SandboxId::parse("abc").unwrap();
        assert_eq!(
            EnvdHost::format(ENVD_PORT, &id, "example.org"),
            "49983-abc.example.org"
        );
    }

    #[test]
    fn envd_url_choice() {
        let id = SandboxId::parse("abc").unwrap();
        assert_eq!(
            envd_url("e2b.app", &id, ENVD_PORT),
            "https://sandbox.e2b.app"
        );
        assert_eq!(
            envd_url("foxtrot-2.e2b.dev", &id, ENVD_PORT),
            "https://sandbox.foxtrot-2.e2b.dev"
        );
        assert_eq!(
            envd_url("quantbox.example", &id, ENVD_PORT),
            "https://49983-abc.quantbox.example"
        );
        assert!(!is_e2b_domain("api.e2b.app"));
    }

    #[test]
    fn api_key_shape() {
        assert!(looks_like_api_key("e2b_53ae1fed82754c17ad8077fbc8bcdd90"));
        assert!(looks_like_api_key(
            "e2b_0000000000000000000000000000000000000000"
        ));
        for bad in ["", "e2b_", "e2b_XYZ", "E2B_abc", "e2b_ABC", "sk_123"] {
            assert!(!looks_like_api_key(bad), "{bad}");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert!(validate_idempotency_key("a").is_ok());
        assert!(validate_idempotency_key("create-1-abc").is_ok());
        assert!(validate_idempotency_key(&"a".repeat(255)).is_ok());
        for bad in [
            String::new(),
            "a".repeat(256),
            "A".into(),
            "a_b".into(),
            "a b".into(),
        ] {
            assert_eq!(
                validate_idempotency_key(&bad),
                Err(IdError::IdempotencyKey(bad.clone()))
            );
        }
    }

    #[test]
    fn template_refs() {
        let t = TemplateRef::parse("base").unwrap();
        assert_eq!(
            (t.namespace.as_deref(), t.alias.as_str(), t.tag()),
            (None, "base", "default")
        );
        let t = TemplateRef::parse("team/python:v1.2_x-y").unwrap();
        assert_eq!(t.namespace.as_deref(), Some("team"));
        assert_eq!((t.alias.as_str(), t.tag()), ("python", "v1.2_x-y"));
        assert!(is_valid_tag("default"));
        for bad in ["", "a:", "a:Tag", "/a", "a/", "a/b/c", "ns/:t", "a:b c"] {
            assert_eq!(
                TemplateRef::parse(bad),
                Err(IdError::TemplateRef(bad.into())),
                "{bad}"
            );
        }
    }
}
