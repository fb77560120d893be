//! The `usher_entry` cookie: the entry token, handed to the visitor's
//! browser on the way back to the shop, where the gate reads it; and the
//! `usher_bind` cookie next to it, the binding secret of a bound token.

use super::gate::ENTRY_COOKIE;
use crate::auth::binding::BINDING_COOKIE;

/// How the broker sets the entry cookie.
#[derive(Clone, Debug, Default)]
pub struct EntryCookie {
    /// `Domain=` of the cookie, when the waiting room and the shop are
    /// sibling hosts under one parent (`shop.example` for
    /// `queue.shop.example` and `www.shop.example`). Unset, the cookie
    /// belongs to the host that served it.
    pub domain: Option<String>,
}

impl EntryCookie {
    /// `USHER_COOKIE_DOMAIN`: a DNS name (a leading dot is dropped, as
    /// browsers do), or empty for a cookie of the serving host alone.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let domain = (!text.is_empty())
            .then(|| cookie_domain(text))
            .transpose()?;
        Ok(EntryCookie { domain })
    }

    /// The `Set-Cookie` value for `token`, which lives `max_age_secs` more.
    /// `secure` when the visitor reached the first proxy over HTTPS.
    pub fn set_cookie(&self, token: &str, max_age_secs: i64, secure: bool) -> String {
        self.cookie(ENTRY_COOKIE, token, max_age_secs, secure)
    }

    /// The `Set-Cookie` value for the binding `secret` of the entry token
    /// set with it: the same attributes, so both reach the same requests.
    pub fn set_binding(&self, secret: &str, max_age_secs: i64, secure: bool) -> String {
        self.cookie(BINDING_COOKIE, secret, max_age_secs, secure)
    }

    fn cookie(&self, name: &str, value: &str, max_age_secs: i64, secure: bool) -> String {
        let mut cookie = format!(
            "{name}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
            max_age_secs.max(0)
        );
        if let Some(domain) = &self.domain {
            cookie.push_str("; Domain=");
            cookie.push_str(domain);
        }
        if secure {
            cookie.push_str("; Secure");
        }
        cookie
    }
}

/// A cookie domain in lowercase, without the leading dot.
fn cookie_domain(text: &str) -> Result<String, String> {
    let domain = text.trim_start_matches('.').to_ascii_lowercase();
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if domain.len() > 253 || !domain.split('.').all(valid_label) {
        return Err(format!(
            "{text:?} is not a cookie domain such as shop.example"
        ));
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_cookie_carries_the_agreed_attributes() {
        let host_only = EntryCookie::default();
        assert_eq!(
            host_only.set_cookie("a.b.c", 900, false),
            "usher_entry=a.b.c; Path=/; Max-Age=900; HttpOnly; SameSite=Lax"
        );
        let shared = EntryCookie {
            domain: Some("shop.example".into()),
        };
        assert_eq!(
            shared.set_cookie("a.b.c", -5, true),
            "usher_entry=a.b.c; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Domain=shop.example; Secure"
        );
        assert_eq!(
            shared.set_binding("s3cr3t", 900, true),
            "usher_bind=s3cr3t; Path=/; Max-Age=900; HttpOnly; SameSite=Lax; Domain=shop.example; Secure"
        );
    }

    #[test]
    fn cookie_domains_are_dns_names() {
        let domain = |text| EntryCookie::parse(text).map(|cookie| cookie.domain);
        assert_eq!(domain(" .Shop.Example"), Ok(Some("shop.example".into())));
        assert_eq!(domain("localhost"), Ok(Some("localhost".into())));
        assert_eq!(domain(""), Ok(None));
        for bad in [
            ".",
            "shop..example",
            "shop.example;Secure",
            "shop example",
            "-shop.example",
            "shop.example.",
            "https://shop.example",
        ] {
            assert!(domain(bad).is_err(), "{bad:?} was taken");
        }
    }
}
