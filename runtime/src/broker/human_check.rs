//! An optional human check (a CAPTCHA) before joining, verified over the
//! `siteverify` protocol that reCAPTCHA, hCaptcha and Turnstile share: a
//! form POST of `secret`, `response` (the visitor's token) and `remoteip`,
//! answered by JSON `{"success": true|false, ...}`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

/// The longest the verifier may take to answer.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest token passed on (providers' tokens are a few hundred bytes
/// to 2 KiB).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// The most of the verifier's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HumanCheckError {
    #[error("the human check was not passed")]
    Failed,
    #[error("the human check cannot be verified now: {0}")]
    Unavailable(String),
}

/// Where and as whom the broker verifies visitors' tokens.
#[derive(Clone)]
pub struct HumanCheck {
    url: url::Url,
    secret: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for HumanCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HumanCheck")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Verdict {
    success: bool,
}

impl HumanCheck {
    /// Fails only when the system's root certificates cannot be read.
    pub fn new(url: url::Url, secret: String) -> std::io::Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HumanCheck {
            url,
            secret,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Asks the verifier whether `token` shows a human, within
    /// [`VERIFY_TIMEOUT`]. `remote_ip` is the visitor's address, passed on
    /// when known.
    pub async fn verify(
        &self,
        token: &str,
        remote_ip: Option<IpAddr>,
    ) -> Result<(), HumanCheckError> {
        let verdict = tokio::time::timeout(VERIFY_TIMEOUT, self.ask(token, remote_ip))
            .await
            .map_err(|_| {
                HumanCheckError::Unavailable("the verifier did not answer in time".into())
            })?
            .map_err(HumanCheckError::Unavailable)?;
        if verdict.success {
            Ok(())
        } else {
            Err(HumanCheckError::Failed)
        }
    }

    /// One `siteverify` exchange; `Err` says why it gave no verdict.
    async fn ask(&self, token: &str, remote_ip: Option<IpAddr>) -> Result<Verdict, String> {
        // Built apart: the serializer is not `Send`, and must not live
        // across an await.
        let form = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("secret", &self.secret)
                .append_pair("response", token);
            if let Some(ip) = remote_ip {
                form.append_pair("remoteip", &ip.to_string());
            }
            form.finish()
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach the verifier: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the verifier answered {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("cannot read the verifier's answer: {e}"))?
            .to_bytes();
        serde_json::from_slice(&body)
            .map_err(|e| format!("the verifier's answer is not siteverify JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::State;
    use axum::routing::post;

    use super::*;

    const SECRET: &str = "site-secret";
    const GOOD_TOKEN: &str = "human-token";

    /// The forms the stub received.
    type Seen = Arc<Mutex<Vec<HashMap<String, String>>>>;

    /// A stub `siteverify` on 127.0.0.1 that passes [`GOOD_TOKEN`] with
    /// [`SECRET`] and nothing else; `answer` overrides what it says.
    async fn stub(answer: Option<&'static str>) -> (url::Url, Seen) {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route(
                "/siteverify",
                post(
                    move |State(seen): State<Seen>,
                          headers: axum::http::HeaderMap,
                          body: String| async move {
                        assert_eq!(
                            headers[axum::http::header::CONTENT_TYPE],
                            "application/x-www-form-urlencoded"
                        );
                        let form: HashMap<String, String> =
                            url::form_urlencoded::parse(body.as_bytes())
                                .into_owned()
                                .collect();
                        let success = form.get("secret").map(String::as_str) == Some(SECRET)
                            && form.get("response").map(String::as_str) == Some(GOOD_TOKEN);
                        seen.lock().unwrap().push(form);
                        answer.map_or_else(
                            || {
                                serde_json::json!({"success": success, "error-codes": []})
                                    .to_string()
                            },
                            str::to_owned,
                        )
                    },
                ),
            )
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/siteverify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url.parse().unwrap(), seen)
    }

    fn check(url: url::Url, secret: &str) -> HumanCheck {
        HumanCheck::new(url, secret.into()).unwrap()
    }

    #[tokio::test]
    async fn the_verifier_decides_with_the_secret_token_and_address() {
        let (url, seen) = stub(None).await;
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        check(url.clone(), SECRET)
            .verify(GOOD_TOKEN, Some(ip))
            .await
            .unwrap();
        assert_eq!(
            check(url.clone(), SECRET).verify("bot", Some(ip)).await,
            Err(HumanCheckError::Failed)
        );
        assert_eq!(
            check(url, "wrong-secret").verify(GOOD_TOKEN, None).await,
            Err(HumanCheckError::Failed)
        );
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0]["secret"], SECRET);
        assert_eq!(seen[0]["response"], GOOD_TOKEN);
        assert_eq!(seen[0]["remoteip"], "203.0.113.7");
        assert!(!seen[2].contains_key("remoteip"));
    }

    #[tokio::test]
    async fn an_unusable_verifier_is_unavailable_not_a_pass() {
        for answer in ["not json", "{\"ok\": true}", ""] {
            let (url, _) = stub(Some(answer)).await;
            let refused = check(url, SECRET).verify(GOOD_TOKEN, None).await;
            assert!(
                matches!(refused, Err(HumanCheckError::Unavailable(_))),
                "{answer:?}: {refused:?}"
            );
        }
        let closed = format!(
            "http://127.0.0.1:{}/siteverify",
            crate::testing::free_port()
        );
        let refused = check(closed.parse().unwrap(), SECRET)
            .verify(GOOD_TOKEN, None)
            .await;
        assert!(matches!(refused, Err(HumanCheckError::Unavailable(_))));
    }

    #[tokio::test]
    async fn a_verifier_that_hangs_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/siteverify", listener.local_addr().unwrap());
        // Accepts and never answers.
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let refused = check(url.parse().unwrap(), SECRET)
            .verify(GOOD_TOKEN, None)
            .await;
        assert!(matches!(refused, Err(HumanCheckError::Unavailable(_))));
    }
}
