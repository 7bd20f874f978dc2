//! The one error shape of every front end: `{"error": {"code", "message", "details"?}}`.
//! Front ends map [`ErrorCode`] to their own form (HTTP status, MCP `isError`, exit
//! status) and nothing else.

use quantbox_sandbox::{ManagerError, ProviderError};
use serde::Serialize;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Unauthenticated,
    PermissionDenied,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::FailedPrecondition => "failed_precondition",
            Self::ResourceExhausted => "resource_exhausted",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Unavailable => "unavailable",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::Internal => "internal",
        }
    }

    /// The REST status of the contract.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::NotFound => 404,
            Self::AlreadyExists => 409,
            Self::FailedPrecondition => 412,
            Self::ResourceExhausted => 429,
            Self::DeadlineExceeded => 504,
            Self::Unavailable => 503,
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::Internal => 500,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct OpError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<Value>,
}

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A bad field: the message names the field and the rule.
    pub fn invalid(field: &str, rule: impl Into<String>) -> Self {
        let rule = rule.into();
        Self::new(ErrorCode::InvalidArgument, format!("{field}: {rule}"))
            .with_details(json!({ "field": field, "rule": rule }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// The JSON body every front end returns.
    pub fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(d) = &self.details {
            e["details"] = d.clone();
        }
        json!({ "error": e })
    }
}

impl From<ProviderError> for OpError {
    fn from(e: ProviderError) -> Self {
        let code = match &e {
            ProviderError::Invalid(_) => ErrorCode::InvalidArgument,
            ProviderError::NotRunning(_) | ProviderError::Precondition(_) => {
                ErrorCode::FailedPrecondition
            }
            ProviderError::Unavailable(_) => ErrorCode::Unavailable,
            ProviderError::NotFound(_) => ErrorCode::NotFound,
            ProviderError::Exists(_) => ErrorCode::AlreadyExists,
            ProviderError::Exhausted(_) => ErrorCode::ResourceExhausted,
            ProviderError::Io { .. } | ProviderError::Internal(_) => ErrorCode::Internal,
        };
        if code == ErrorCode::Internal {
            tracing::error!(error = %e, "provider error");
        }
        Self::new(code, e.to_string())
    }
}

impl From<ManagerError> for OpError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::NotFound(_) => Self::new(ErrorCode::NotFound, e.to_string()),
            ManagerError::Invalid(m) => Self::new(ErrorCode::InvalidArgument, m),
            ManagerError::Precondition(m) => Self::new(ErrorCode::FailedPrecondition, m),
            ManagerError::Exhausted(m) => Self::new(ErrorCode::ResourceExhausted, m),
            ManagerError::Unavailable(m) => Self::new(ErrorCode::Unavailable, m),
            ManagerError::Provider(p) => p.into(),
            ManagerError::Store(s) => {
                tracing::error!(error = %s, "store error");
                Self::internal(format!(
                    "the server could not read or write its database: {s}"
                ))
            }
        }
    }
}

impl From<quantbox_sandbox::StoreError> for OpError {
    fn from(s: quantbox_sandbox::StoreError) -> Self {
        ManagerError::Store(s).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_contract_status() {
        let table = [
            (ErrorCode::InvalidArgument, "invalid_argument", 400),
            (ErrorCode::NotFound, "not_found", 404),
            (ErrorCode::AlreadyExists, "already_exists", 409),
            (ErrorCode::FailedPrecondition, "failed_precondition", 412),
            (ErrorCode::ResourceExhausted, "resource_exhausted", 429),
            (ErrorCode::DeadlineExceeded, "deadline_exceeded", 504),
            (ErrorCode::Unavailable, "unavailable", 503),
            (ErrorCode::Unauthenticated, "unauthenticated", 401),
            (ErrorCode::PermissionDenied, "permission_denied", 403),
            (ErrorCode::Internal, "internal", 500),
        ];
        for (code, name, status) in table {
            assert_eq!(code.as_str(), name);
            assert_eq!(code.http_status(), status);
            assert_eq!(serde_json::to_value(code).unwrap(), json!(name));
        }
    }

    #[test]
    fn the_json_shape_is_the_contracts() {
        let e = OpError::invalid("timeout", "must be between 1 and 86400, got 0");
        assert_eq!(
            e.to_json(),
            json!({"error": {"code": "invalid_argument",
                "message": "timeout: must be between 1 and 86400, got 0",
                "details": {"field": "timeout", "rule": "must be between 1 and 86400, got 0"}}})
        );
        let e = OpError::not_found("no sandbox");
        assert_eq!(
            e.to_json(),
            json!({"error": {"code": "not_found", "message": "no sandbox"}})
        );
    }
}
