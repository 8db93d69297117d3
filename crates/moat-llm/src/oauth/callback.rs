//! The one-shot loopback server that receives the authorization code: bound to
//! `127.0.0.1` on a random port, it answers `GET /callback?code=..&state=..` once and is
//! gone. Any other path gets 404 and the server keeps waiting; a wrong `state` ends the
//! login (fail closed: a forged redirect must not be retried into success).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::{OAuthError, short};

/// The path the provider redirects to.
pub const PATH: &str = "/callback";

/// A bound callback server.
pub struct Callback {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Callback {
    /// Binds `127.0.0.1` on a random port.
    pub async fn bind() -> Result<Self, OAuthError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| OAuthError::Callback(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| OAuthError::Callback(e.to_string()))?;
        Ok(Self { listener, addr })
    }

    /// The `redirect_uri` to register in the login.
    pub fn redirect_uri(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// Waits up to `timeout` for the redirect carrying `state`; returns the code.
    pub async fn wait(self, state: &str, timeout: Duration) -> Result<String, OAuthError> {
        let (tx, mut rx) = mpsc::channel::<Result<String, OAuthError>>(1);
        let deadline = tokio::time::Instant::now() + timeout;
        let expected = state.to_string();
        loop {
            tokio::select! {
                result = rx.recv() => {
                    // The page went out before the result was sent.
                    return result.unwrap_or(Err(OAuthError::Callback("lost the callback".into())));
                }
                accepted = self.listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let (tx, expected) = (tx.clone(), expected.clone());
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let (tx, expected) = (tx.clone(), expected.clone());
                            async move { Ok::<_, Infallible>(answer(&req, &expected, &tx).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
                () = tokio::time::sleep_until(deadline) => return Err(OAuthError::TimedOut(timeout)),
            }
        }
    }
}

async fn answer(
    req: &Request<Incoming>,
    expected_state: &str,
    tx: &mpsc::Sender<Result<String, OAuthError>>,
) -> Response<Full<Bytes>> {
    if req.uri().path() != PATH || req.method() != http::Method::GET {
        return page(StatusCode::NOT_FOUND, "Not found.");
    }
    let result = code_from_query(req.uri().query().unwrap_or_default(), expected_state);
    let resp = match &result {
        Err(OAuthError::StateMismatch) => page(
            StatusCode::BAD_REQUEST,
            "This login link does not belong to the login moat is waiting for. Start again with `moat account add`.",
        ),
        Err(OAuthError::Denied { code, .. }) if code == "no_code" => {
            page(StatusCode::BAD_REQUEST, "The redirect carried no code.")
        }
        Err(_) => page(
            StatusCode::OK,
            "The provider did not grant access; see the terminal.",
        ),
        Ok(_) => page(
            StatusCode::OK,
            "moat received the authorization. You can close this tab.",
        ),
    };
    let _ = tx.try_send(result);
    resp
}

/// The code from a redirect's query string. The `state` is checked first, in constant
/// time, and a wrong one fails the login (a forged redirect is never retried).
pub fn code_from_query(query: &str, expected_state: &str) -> Result<String, OAuthError> {
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
    if !state_matches(params.get("state").map(String::as_str), expected_state) {
        return Err(OAuthError::StateMismatch);
    }
    if let Some(code) = params.get("error") {
        return Err(OAuthError::Denied {
            code: short(code, 64),
            description: params.get("error_description").map(|d| short(d, 200)),
        });
    }
    params
        .get("code")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or(OAuthError::Denied {
            code: "no_code".into(),
            description: None,
        })
}

/// The code from what a person pasted after a `--manual` login: the whole redirect address
/// (checked as [`code_from_query`] checks it), `CODE#STATE` as some providers' pages show
/// it (the state must match too), or the bare code (PKCE still binds it to this login's
/// verifier).
pub fn code_from_pasted(pasted: &str, expected_state: &str) -> Result<String, OAuthError> {
    let pasted = pasted.trim();
    if pasted.is_empty() {
        return Err(OAuthError::Denied {
            code: "nothing_pasted".into(),
            description: None,
        });
    }
    if let Ok(url) = url::Url::parse(pasted) {
        return code_from_query(url.query().unwrap_or_default(), expected_state);
    }
    match pasted.split_once('#') {
        Some((_, state)) if !state_matches(Some(state), expected_state) => {
            Err(OAuthError::StateMismatch)
        }
        Some((code, _)) => Ok(code.to_string()),
        None => Ok(pasted.to_string()),
    }
}

/// The one comparison of a returned `state` with the login's, in constant time.
fn state_matches(returned: Option<&str>, expected: &str) -> bool {
    returned.is_some_and(|s| bool::from(s.as_bytes().ct_eq(expected.as_bytes())))
}

fn page(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<!doctype html><meta charset=utf-8><title>moat</title><p>{}</p>",
        text.replace('<', "&lt;")
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        "referrer-policy",
        http::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn pasted_codes() {
        use super::code_from_pasted as pasted;
        assert_eq!(pasted("abc", "s").unwrap(), "abc");
        assert_eq!(
            pasted("http://127.0.0.1/callback?code=xyz&state=s", "s").unwrap(),
            "xyz"
        );
        assert!(pasted("http://127.0.0.1/callback?code=xyz&state=t", "s").is_err());
        assert!(pasted("http://127.0.0.1/callback?code=xyz", "s").is_err());
        assert!(pasted("", "s").is_err());
        assert_eq!(pasted("xyz#s", "s").unwrap(), "xyz");
        assert!(matches!(
            pasted("xyz#forged", "s"),
            Err(OAuthError::StateMismatch)
        ));
        assert!(matches!(
            pasted("http://127.0.0.1/callback?error=access_denied&state=s", "s"),
            Err(OAuthError::Denied { .. })
        ));
    }

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn takes_the_code_with_the_right_state_only() {
        let cb = Callback::bind().await.unwrap();
        let uri = cb.redirect_uri();
        let addr = uri
            .trim_start_matches("http://")
            .trim_end_matches(PATH)
            .to_string();
        let waiting = tokio::spawn(cb.wait("st4te", Duration::from_secs(10)));
        assert!(get(&addr, "/favicon.ico").await.starts_with("HTTP/1.1 404"));
        let ok = get(&addr, "/callback?code=abc&state=st4te").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert_eq!(waiting.await.unwrap().unwrap(), "abc");

        let cb = Callback::bind().await.unwrap();
        let addr = cb.addr.to_string();
        let waiting = tokio::spawn(cb.wait("st4te", Duration::from_secs(10)));
        get(&addr, "/callback?code=abc&state=other").await;
        assert!(matches!(
            waiting.await.unwrap(),
            Err(OAuthError::StateMismatch)
        ));

        let cb = Callback::bind().await.unwrap();
        let addr = cb.addr.to_string();
        let waiting = tokio::spawn(cb.wait("s", Duration::from_secs(10)));
        get(&addr, "/callback?error=access_denied&state=s").await;
        assert!(
            matches!(waiting.await.unwrap(), Err(OAuthError::Denied { code, .. }) if code == "access_denied")
        );

        let cb = Callback::bind().await.unwrap();
        let r = cb.wait("s", Duration::from_millis(50)).await;
        assert!(matches!(r, Err(OAuthError::TimedOut(_))));
    }
}
