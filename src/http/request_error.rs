//! The `extensions.code` of requests refused before any field ran.

/// The `extensions.code` of a request refused before any field ran, named as
/// Apollo Server names them so clients can tell these from field errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorCode {
    /// Not a GraphQL-over-HTTP request this server takes: wrong content type or
    /// method, malformed JSON, a batch, a body over the limit.
    BadRequest,
    /// The document is not valid GraphQL syntax.
    ParseFailed,
    /// The document does not fit the schema or its limits, or an argument or
    /// variable value does not fit its type, or a required variable is missing.
    ValidationFailed,
}

impl RequestErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestErrorCode::BadRequest => "BAD_REQUEST",
            RequestErrorCode::ParseFailed => "GRAPHQL_PARSE_FAILED",
            RequestErrorCode::ValidationFailed => "GRAPHQL_VALIDATION_FAILED",
        }
    }
}
