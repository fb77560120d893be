//! Where an admitted visitor is sent back to: a return URL checked against
//! the shop's allow-list, so that the waiting room is never an open
//! redirect.
//!
//! A return URL is allowed when it is
//! * a path on the host that served the waiting room (`/checkout?x=1`):
//!   exactly one leading `/`, since browsers read `//host` and `/\host` as
//!   another host;
//! * an absolute `http`/`https` URL, without user info, whose origin is in
//!   the allow-list (`USHER_RETURN_ORIGINS`).
//!
//! Only printable ASCII is taken (what a proxy's `$request_uri` is, once
//! percent-encoded): browsers drop tabs and newlines from URLs and read `\`
//! as `/`, so such characters could turn a harmless-looking path into
//! another host.

use url::Url;

/// The origins a visitor may be sent back to, besides paths on the
/// broker's own host. Each is kept as its ASCII serialization
/// (`https://shop.example`, `http://127.0.0.1:8080`).
#[derive(Clone, Debug, Default)]
pub struct ReturnOrigins(Vec<String>);

impl ReturnOrigins {
    /// `USHER_RETURN_ORIGINS`: origins separated by commas; empty entries
    /// (an empty setting, say) are skipped.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(parse_origin)
            .collect::<Result<_, _>>()
            .map(ReturnOrigins)
    }

    /// The `Location` to send the visitor to for `target`, or why not.
    pub fn check(&self, target: &str) -> Result<String, &'static str> {
        if target.is_empty() {
            return Err("the return URL is empty");
        }
        if !target.bytes().all(|b| b.is_ascii_graphic()) || target.contains('\\') {
            return Err(
                "the return URL holds a character other than printable ASCII, or a backslash",
            );
        }
        if let Some(path) = target.strip_prefix('/') {
            return if path.starts_with('/') {
                Err("the return URL names another host (`//`)")
            } else {
                Ok(target.to_owned())
            };
        }
        let url = Url::parse(target).map_err(|_| "the return URL is neither a path nor a URL")?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the return URL is not http or https");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the return URL carries user info");
        }
        let origin = url.origin().ascii_serialization();
        if !self.0.contains(&origin) {
            return Err("the return URL's origin is not in USHER_RETURN_ORIGINS");
        }
        Ok(url.into())
    }
}

/// One entry of `USHER_RETURN_ORIGINS`: `http(s)://host[:port]`, with no
/// path, query or user info. Returns its ASCII serialization, the form
/// [`ReturnOrigins::check`] compares.
fn parse_origin(text: &str) -> Result<String, String> {
    let refuse =
        |why: &str| format!("{text:?} is not an origin such as https://shop.example: {why}");
    let url = Url::parse(text).map_err(|e| refuse(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse("the scheme must be http or https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("user info is not allowed"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("an origin has no path, query or fragment"));
    }
    if url.port() == Some(0) {
        return Err(refuse("port 0 is no port"));
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shop() -> ReturnOrigins {
        ReturnOrigins::parse("https://shop.example, http://127.0.0.1:8081").unwrap()
    }

    #[test]
    fn paths_on_the_same_host_are_allowed_as_they_are() {
        for path in [
            "/",
            "/checkout",
            "/checkout?item=42&qty=1#pay",
            "/a/%2F%2Fevil.com",
            "/./x",
        ] {
            assert_eq!(shop().check(path), Ok(path.to_owned()), "{path}");
        }
    }

    #[test]
    fn listed_origins_are_allowed_in_normal_form() {
        for (target, location) in [
            (
                "https://shop.example/checkout",
                "https://shop.example/checkout",
            ),
            ("https://shop.example", "https://shop.example/"),
            (
                "HTTPS://SHOP.example:443/x?y=1",
                "https://shop.example/x?y=1",
            ),
            (
                "http://127.0.0.1:8081/checkout",
                "http://127.0.0.1:8081/checkout",
            ),
        ] {
            assert_eq!(shop().check(target), Ok(location.to_owned()), "{target}");
        }
    }

    #[test]
    fn everything_else_is_refused() {
        for target in [
            "",
            // Other hosts, however spelled.
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com/",
            "https://shop.example.evil.com/",
            "http://shop.example/",
            "https://shop.example:8443/",
            "http://127.0.0.1:8082/",
            "https:evil.com",
            "https:/evil.com",
            // User info that makes a listed name look like the host.
            "https://shop.example@evil.com/",
            "https://user:pass@shop.example/",
            "https://shop.example%40evil.com/",
            // Other schemes.
            "javascript:alert(1)",
            "JavaScript:alert(1)//https://shop.example",
            "data:text/html,<script>alert(1)</script>",
            "ftp://shop.example/",
            // Relative forms that are not paths.
            "checkout",
            "?next=1",
            "#top",
            // Characters browsers drop or reinterpret.
            "/\t/evil.com",
            "/\n/evil.com",
            "/\r\n/evil.com",
            " /checkout",
            "/check out",
            "/\u{0}x",
            "/caf\u{e9}",
            "https://shop.example\\@evil.com/",
        ] {
            assert!(shop().check(target).is_err(), "{target:?} was allowed");
        }
    }

    #[test]
    fn without_a_list_only_paths_are_allowed() {
        let none = ReturnOrigins::default();
        assert!(none.check("/checkout").is_ok());
        assert!(none.check("https://shop.example/").is_err());
    }

    #[test]
    fn origins_in_the_setting_must_be_bare() {
        let origins =
            ReturnOrigins::parse(" https://Shop.Example:443/ ,,http://localhost:8080").unwrap();
        assert_eq!(origins.0, ["https://shop.example", "http://localhost:8080"]);
        assert!(ReturnOrigins::parse("").unwrap().0.is_empty());
        assert!(ReturnOrigins::parse("https://shop.example,evil").is_err());
        for bad in [
            "shop.example",
            "ftp://shop.example",
            "https://shop.example/checkout",
            "https://shop.example/?x",
            "https://shop.example/#x",
            "https://user@shop.example",
            "javascript:alert(1)",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad:?} was taken");
        }
    }
}
