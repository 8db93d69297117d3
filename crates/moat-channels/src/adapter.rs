//! What a messaging service's adapter provides: a connection that delivers messages, and
//! a way to send text back. The hub ([`crate::hub`]) does the rest (who may talk,
//! sessions, reconnecting), the same for every service.

use tokio::sync::mpsc;

/// Where a message came from or a reply goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A direct conversation with one sender (their id on the service).
    Direct(String),
    /// A room (an IRC channel), by its name on the service.
    Room(String),
}

/// A message from the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's stable id on the service (what allowlists hold).
    pub sender: String,
    /// The name they show, for the owner's eyes.
    pub display: String,
    /// Where it was said: a direct message, or a room.
    pub place: Target,
    /// In a room: whether the assistant was addressed (the mention is already removed
    /// from `text`).
    pub mentioned: bool,
    /// What they said.
    pub text: String,
}

/// A channel's failure.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The connection could not be made or was lost.
    #[error("{0}")]
    Connection(String),
    /// The service refused us (credentials, a ban): retrying will not help soon.
    #[error("{0}")]
    Refused(String),
    /// Sending failed.
    #[error("{0}")]
    Send(String),
}

/// A connection to one messaging service.
#[async_trait::async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Connects and delivers each message into `inbox` until the connection ends;
    /// calls `connected` once the service has accepted it. Ok when the hub closed the inbox.
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError>;

    /// Sends `text` (one piece, already within [`Adapter::max_piece`]) to `to`.
    async fn send(&self, to: &Target, text: &str) -> Result<(), ChannelError>;

    /// Shows `to` that a reply is being written, where the service can.
    async fn typing(&self, _to: &Target) {}

    /// Whether a sent message can be edited, so a reply can be shown as it is written.
    fn edits(&self) -> bool {
        false
    }

    /// Sends `text` and returns what [`Adapter::edit`] needs to change it later.
    async fn send_editable(&self, to: &Target, text: &str) -> Result<String, ChannelError> {
        self.send(to, text).await.map(|()| String::new())
    }

    /// Replaces the text of the message `id` sent to `to`.
    async fn edit(&self, _to: &Target, _id: &str, _text: &str) -> Result<(), ChannelError> {
        Ok(())
    }

    /// The most bytes of text one message may carry on this service.
    fn max_piece(&self) -> usize;
}

/// `text` cut into pieces of at most `max` bytes, at line ends where it can, else at
/// spaces, else at character boundaries; empty lines are dropped (services ignore them).
pub fn pieces(text: &str, max: usize) -> Vec<String> {
    let max = max.max(8);
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line.trim_end();
        while rest.len() > max {
            let mut cut = max;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(space) = rest[..cut].rfind(' ')
                && space > max / 2
            {
                cut = space;
            }
            out.push(rest[..cut].trim_end().to_string());
            rest = rest[cut..].trim_start();
        }
        if !rest.trim().is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_fit_and_keep_words_and_characters_whole() {
        assert_eq!(pieces("a\n\nb", 10), ["a", "b"]);
        let long = "word ".repeat(50);
        for p in pieces(&long, 32) {
            assert!(p.len() <= 32, "{p}");
            assert!(!p.starts_with(' ') && !p.ends_with(' '));
            assert!(p.split(' ').all(|w| w == "word"));
        }
        let wide = "é".repeat(40);
        let ps = pieces(&wide, 9);
        assert!(ps.iter().all(|p| p.len() <= 9));
        assert_eq!(ps.concat(), wide);
    }
}
