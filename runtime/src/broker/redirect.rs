//! The gate's redirect form, `/v1/rooms/{room}/gate/redirect`, for proxies
//! that hand the gate's refusal to the visitor as it is and have no
//! separate sign-in URL (Traefik `forwardAuth`, Envoy `ext_authz`). A
//! refused page visit gets `302` to the waiting page with the URL the
//! visitor asked for as `?return=`; anything else still gets the JSON 401.
//!
//! The URL asked for comes from what the proxy says of the original
//! request: `X-Forwarded-Uri` (Traefik), `X-Original-URI` (NGINX), or the
//! path after `/gate/redirect` with the query (Envoy appends the original
//! path to the authorization service's path prefix).

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::api::header_text;
use super::error::ApiError;

/// Where a refused visitor finds the waiting page (`USHER_WAITING_PAGE`):
/// a path on the shop's own host (`/queue/`, the path-prefix layout) or an
/// absolute URL (`https://queue.shop.example/`, the shared-domain layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingPage(String);

impl Default for WaitingPage {
    fn default() -> Self {
        WaitingPage("/queue/".into())
    }
}

impl WaitingPage {
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            format!(
                "{text:?} is not a waiting page such as /queue/ or https://queue.shop.example/: {why}"
            )
        };
        if text.contains(['?', '#']) || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(
                "it must be printable ASCII without a query or fragment",
            ));
        }
        if let Some(path) = text.strip_prefix('/') {
            if path.starts_with('/') || text.contains('\\') {
                return Err(refuse("a path starts with exactly one `/`"));
            }
            return Ok(WaitingPage(text.to_owned()));
        }
        let url = Url::parse(text).map_err(|e| refuse(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
            return Err(refuse("a URL must be http or https, without user info"));
        }
        Ok(WaitingPage(url.into()))
    }

    fn is_absolute(&self) -> bool {
        !self.0.starts_with('/')
    }

    /// The `Location` for a visitor refused on `original`.
    fn location(&self, original: &Original) -> String {
        let target = if self.is_absolute() {
            let scheme = original.scheme.unwrap_or(if self.0.starts_with("https:") {
                "https"
            } else {
                "http"
            });
            match original.host {
                Some(host) => format!("{scheme}://{host}{}", original.uri),
                None => original.uri.clone(),
            }
        } else {
            original.uri.clone()
        };
        let escaped: String = url::form_urlencoded::byte_serialize(target.as_bytes()).collect();
        format!("{}?return={escaped}", self.0)
    }
}

/// What the proxy says of the request it asks the gate about.
struct Original<'a> {
    method: Method,
    /// Path and query.
    uri: String,
    host: Option<&'a str>,
    scheme: Option<&'static str>,
    /// The visitor's browser asks for a page (or does not say what it wants).
    wants_page: bool,
}

impl<'a> Original<'a> {
    /// Envoy asks with the visitor's own method; Traefik says it in a header.
    fn read(
        headers: &'a HeaderMap,
        request_method: &Method,
        suffix: Option<&str>,
        query: Option<&str>,
    ) -> Self {
        let first = |name: &'static str| {
            header_text(headers, HeaderName::from_static(name))
                .and_then(|v| v.split(',').next())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let uri = first("x-forwarded-uri")
            .or_else(|| first("x-original-uri"))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let path = suffix.filter(|s| s.starts_with('/')).unwrap_or("/");
                match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.to_owned(),
                }
            });
        let method = first("x-forwarded-method")
            .or_else(|| first("x-original-method"))
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok());
        let accept = header_text(headers, header::ACCEPT);
        Original {
            method: method.unwrap_or_else(|| request_method.clone()),
            uri,
            host: first("x-forwarded-host").or_else(|| header_text(headers, header::HOST)),
            scheme: first("x-forwarded-proto").and_then(|p| match p {
                _ if p.eq_ignore_ascii_case("https") => Some("https"),
                _ if p.eq_ignore_ascii_case("http") => Some("http"),
                _ => None,
            }),
            wants_page: accept.is_none_or(|a| a.contains("text/html") || a.contains("*/*")),
        }
    }
}

/// The gate's refusal in redirect form: `302` to the waiting page for a
/// refused page visit (GET or HEAD that accepts HTML), the error itself
/// otherwise. `suffix` is the request's path after `/gate/redirect`.
pub(super) fn refusal(
    refused: ApiError,
    page: &WaitingPage,
    request_method: &Method,
    headers: &HeaderMap,
    suffix: Option<&str>,
    query: Option<&str>,
) -> Response {
    let original = Original::read(headers, request_method, suffix, query);
    let is_visit = matches!(original.method, Method::GET | Method::HEAD) && original.wants_page;
    match HeaderValue::from_str(&page.location(&original)) {
        Ok(location) if is_visit && refused.status == StatusCode::UNAUTHORIZED => {
            let mut response = refused.into_response();
            *response.status_mut() = StatusCode::FOUND;
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        _ => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    fn refused() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "missing_entry_token", "no token")
    }

    fn location(response: &Response) -> Option<&str> {
        response
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn waiting_pages_are_paths_or_http_urls() {
        assert_eq!(
            WaitingPage::default(),
            WaitingPage::parse("/queue/").unwrap()
        );
        assert_eq!(
            WaitingPage::parse("https://queue.shop.example").unwrap(),
            WaitingPage("https://queue.shop.example/".into())
        );
        for bad in [
            "//evil.example/",
            "/\\evil",
            "/queue/?x=1",
            "/q#x",
            "queue",
            "javascript:alert(1)",
            "https://u@queue.shop.example/",
            "/que ue/",
        ] {
            assert!(WaitingPage::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn traefik_visits_are_sent_to_the_waiting_page() {
        let page = WaitingPage::default();
        let asked = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/checkout?seat=12&x=y"),
            ("x-forwarded-host", "shop.example"),
            ("accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ]);
        let response = refusal(refused(), &page, &Method::GET, &asked, None, None);
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            location(&response),
            Some("/queue/?return=%2Fcheckout%3Fseat%3D12%26x%3Dy")
        );
        // A form's POST, or a script that wants JSON, gets the 401 itself.
        let mut posted = asked.clone();
        posted.insert("x-forwarded-method", HeaderValue::from_static("POST"));
        let mut scripted = asked.clone();
        scripted.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        for other in [posted, scripted] {
            let response = refusal(refused(), &page, &Method::GET, &other, None, None);
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(location(&response), None);
        }
    }

    #[test]
    fn envoy_visits_carry_the_path_after_the_prefix() {
        let page = WaitingPage::parse("https://queue.shop.example/").unwrap();
        let asked = headers(&[("host", "www.shop.example"), ("x-forwarded-proto", "https")]);
        let response = refusal(
            refused(),
            &page,
            &Method::GET,
            &asked,
            Some("/checkout/cart"),
            Some("a=1"),
        );
        assert_eq!(
            location(&response),
            Some(
                "https://queue.shop.example/?return=https%3A%2F%2Fwww.shop.example%2Fcheckout%2Fcart%3Fa%3D1"
            )
        );
        let response = refusal(refused(), &page, &Method::DELETE, &asked, None, None);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}
