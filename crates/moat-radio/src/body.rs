//! An answer's body read whole, up to a size: how every HTTP answer this crate takes (the
//! library's, a speaker's, a speech server's) is read, so none can grow without bound.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// It is larger than the limit.
    TooLarge,
    /// The connection broke before its end.
    BrokeOff,
}

/// `body`, whole, if it is at most `max` bytes.
pub(crate) async fn read_limited(
    body: hyper::body::Incoming,
    max: usize,
) -> Result<Bytes, BodyError> {
    Limited::new(body, max)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge
            } else {
                BodyError::BrokeOff
            }
        })
}
