//! What a join may carry: nothing, or a JSON object with the newcomer's
//! proof of work and human-check token. Fields it does not know are
//! ignored, so clients may send more than one broker version reads.

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::api::declares_json;
use super::error::ApiError;

/// A join's body, read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct JoinBody {
    /// An invite code for the priority lane.
    pub invite: Option<String>,
    pub proof: Option<Proof>,
    /// The human check's token (`humanToken`).
    pub human_token: Option<String>,
}

/// A solved proof-of-work challenge (see [`crate::pow`]).
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Proof {
    pub challenge: String,
    pub counter: u64,
}

impl JoinBody {
    /// Reads a join's body. A declared type other than JSON is refused even
    /// with an empty body: browsers send one with every cross-site form,
    /// and a form must not be able to take a place in line.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, ApiError> {
        let empty = body.iter().all(u8::is_ascii_whitespace);
        match declares_json(headers) {
            Some(true) => {}
            None if empty => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "a join carries no body, or a JSON object with Content-Type: application/json",
                ));
            }
        }
        if empty {
            return Ok(JoinBody::default());
        }
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the body must be empty or a JSON object",
            ));
        };
        Ok(JoinBody {
            invite: field(&fields, "invite", "invalid_body")?,
            proof: field(&fields, "proof", "invalid_proof")?,
            human_token: field(&fields, "humanToken", "invalid_body")?,
        })
    }
}

/// Field `name` of the body, if present; a malformed one is a 400 `code`.
fn field<T: serde::de::DeserializeOwned>(
    fields: &Map<String, Value>,
    name: &str,
    code: &'static str,
) -> Result<Option<T>, ApiError> {
    fields
        .get(name)
        .map(|value| {
            T::deserialize(value)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, code, format!("{name}: {e}")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::http::header::CONTENT_TYPE;

    use super::*;

    fn parse(content_type: Option<&str>, body: &str) -> Result<JoinBody, (u16, &'static str)> {
        let mut headers = HeaderMap::new();
        if let Some(kind) = content_type {
            headers.insert(CONTENT_TYPE, kind.parse().unwrap());
        }
        JoinBody::parse(&headers, body.as_bytes()).map_err(|e| (e.status.as_u16(), e.code))
    }

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn empty_bodies_and_unknown_fields_are_fine() {
        assert_eq!(parse(None, ""), Ok(JoinBody::default()));
        assert_eq!(parse(JSON, " \n"), Ok(JoinBody::default()));
        assert_eq!(parse(JSON, r#"{"later": "x"}"#), Ok(JoinBody::default()));
        assert_eq!(
            parse(
                Some("application/vnd.usher+json"),
                r#"{"invite": "c0de", "proof": {"challenge": "v1.c", "counter": 7}, "humanToken": "t"}"#
            ),
            Ok(JoinBody {
                invite: Some("c0de".into()),
                proof: Some(Proof {
                    challenge: "v1.c".into(),
                    counter: 7
                }),
                human_token: Some("t".into()),
            })
        );
    }

    #[test]
    fn other_types_and_malformed_fields_are_refused() {
        assert_eq!(
            parse(Some("application/x-www-form-urlencoded"), ""),
            Err((415, "unsupported_media_type"))
        );
        assert_eq!(parse(None, "{}"), Err((415, "unsupported_media_type")));
        for body in ["[]", "null", "{", "\"x\""] {
            assert_eq!(parse(JSON, body), Err((400, "invalid_body")), "{body}");
        }
        for proof in [
            r#""abc""#,
            "null",
            r#"{"challenge": "v1.c"}"#,
            r#"{"challenge": "v1.c", "counter": -1}"#,
            r#"{"challenge": "v1.c", "counter": "7"}"#,
            r#"{"challenge": "v1.c", "counter": 1.5}"#,
            r#"{"challenge": 5, "counter": 7}"#,
        ] {
            let body = format!(r#"{{"proof": {proof}}}"#);
            assert_eq!(parse(JSON, &body), Err((400, "invalid_proof")), "{body}");
        }
        for body in [r#"{"humanToken": 5}"#, r#"{"invite": 5}"#] {
            assert_eq!(parse(JSON, body), Err((400, "invalid_body")), "{body}");
        }
    }
}
