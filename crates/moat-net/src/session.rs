//! Browser sessions for one narrow set of control routes: a page that was given the
//! control token (in its URL's fragment) trades it once for a cookie, so the token does
//! not stay in the page, and later calls carry the cookie instead.
//!
//! The cookie is `EXPIRY.NONCE.MAC`, the MAC an HMAC-SHA256 keyed with this run's control
//! token: nothing is stored, a new `moat serve` (new token) ends every session, and a
//! forged or expired cookie fails in constant time. Browsers send a cookie to every port
//! of a host, so the cookie is scoped by `Path` to [`SESSION_PATH`] and only routes under
//! it accept it (a cookie that leaks to another local server can at most skip a song);
//! `SameSite=Strict` and `HttpOnly` keep other sites and scripts from using it.

use hmac::{Hmac, KeyInit, Mac};
use moat_core::secret::SecretString;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const SESSION_COOKIE: &str = "moat_session";
/// The only paths (this and below) a session cookie is sent to and accepted on.
pub const SESSION_PATH: &str = "/radio/api";
/// How long a session lasts.
pub const SESSION_TTL_SECS: u64 = 12 * 3600;

fn mac(token: &SecretString, body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(token.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    m.update(b"moat-session-v1:");
    m.update(body.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// A new session cookie value, valid until `now_unix + SESSION_TTL_SECS`.
pub fn mint(token: &SecretString, now_unix: u64) -> String {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the operating system's random source works");
    let body = format!("{}.{}", now_unix + SESSION_TTL_SECS, hex::encode(nonce));
    let mac = mac(token, &body);
    format!("{body}.{mac}")
}

/// The `Set-Cookie` header value carrying `value`.
pub fn set_cookie(value: &str) -> String {
    format!(
        "{SESSION_COOKIE}={value}; Path={SESSION_PATH}; Max-Age={SESSION_TTL_SECS}; HttpOnly; SameSite=Strict"
    )
}

/// Whether `value` is a session this token minted that has not expired.
pub fn valid(token: &SecretString, value: &str, now_unix: u64) -> bool {
    let Some((body, given)) = value.rsplit_once('.') else {
        return false;
    };
    let Some(expiry) = body
        .split_once('.')
        .and_then(|(e, _)| e.parse::<u64>().ok())
    else {
        return false;
    };
    let expected = mac(token, body);
    bool::from(expected.as_bytes().ct_eq(given.as_bytes())) && now_unix < expiry
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == SESSION_COOKIE && !value.is_empty()).then_some(value)
    })
}

/// Whether a request to `path` may be authorised by a session cookie.
pub fn applies_to(path: &str) -> bool {
    path.strip_prefix(SESSION_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_session_is_valid_until_it_expires_and_only_for_its_token() {
        let token = SecretString::new("run-token-0123456789".into());
        let s = mint(&token, 1000);
        assert!(valid(&token, &s, 1001));
        assert!(!valid(&token, &s, 1000 + SESSION_TTL_SECS));
        let other = SecretString::new("another-run".into());
        assert!(!valid(&other, &s, 1001));
        // Tampering with the expiry breaks the MAC.
        let (exp, rest) = s.split_once('.').unwrap();
        let longer = format!("{}.{rest}", exp.parse::<u64>().unwrap() + 1_000_000);
        assert!(!valid(&token, &longer, 1001));
        for junk in ["", ".", "a.b.c", "1.2"] {
            assert!(!valid(&token, junk, 1));
        }
    }

    #[test]
    fn the_cookie_is_found_among_others_and_scoped() {
        assert_eq!(
            from_cookie_header("a=1; moat_session=xyz; b=2"),
            Some("xyz")
        );
        assert_eq!(from_cookie_header("moat_sessionx=1"), None);
        assert!(applies_to("/radio/api/skip"));
        assert!(applies_to("/radio/api"));
        assert!(!applies_to("/radio/apix"));
        assert!(!applies_to("/status"));
        assert!(set_cookie("v").contains("HttpOnly; SameSite=Strict"));
    }
}
