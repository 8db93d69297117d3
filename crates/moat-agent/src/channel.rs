//! Where the assistant meets people: the terminal (`moat chat`) today; the web chat and
//! the outside channels (Matrix, IRC, Telegram, email, webhooks) plug in the same way.
//!
//! A channel delivers messages, shows a turn as it runs, asks its owner about calls that
//! wait, and may be told to stop a turn. [`serve`] drives one: each message is a turn of
//! its sender's conversation (`channel:sender`), and a stop cancels the running turn with
//! its model call and tools (a sandboxed command in flight is ended by its wall time).

use crate::turn::{Agent, Approver, TurnEvents};

/// A message that reached the assistant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Who sent it, as the channel names them.
    pub sender: String,
    /// What they said.
    pub text: String,
}

/// One way to reach the assistant.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Its name, as sessions and audit records name it (`chat`, `web`, `matrix`).
    fn name(&self) -> &str;
    /// The next message, or None once the channel has closed.
    async fn next(&self) -> Option<Inbound>;
    /// Whether `sender` may reach the assistant at all. The terminal is its owner; an
    /// outside channel admits only senders paired with the owner's consent.
    fn admits(&self, sender: &str) -> bool;
    /// `sender`'s trust as `[sandbox.tools.TOOL] trust` names it: `owner` for the
    /// owner's own channels; `guest`, the most restricted, unless a channel says more.
    fn standing(&self, _sender: &str) -> &str {
        "guest"
    }
    /// How a turn for `sender` is shown (streamed or edited where the channel can).
    fn events(&self, sender: &str) -> Box<dyn TurnEvents + '_>;
    /// Who decides about `sender`'s calls that wait for approval.
    fn approver(&self, sender: &str) -> Box<dyn Approver + '_>;
    /// Says something to `sender` outside a turn (a refusal, an error).
    async fn say(&self, sender: &str, text: &str);
    /// Resolves when `sender` asks to stop the running turn; never, by default.
    async fn stop(&self, _sender: &str) {
        std::future::pending::<()>().await;
    }
}

/// Serves `channel` until it closes: each admitted message is one turn.
pub async fn serve(agent: &Agent, channel: &dyn Channel) {
    while let Some(message) = channel.next().await {
        if !channel.admits(&message.sender) {
            tracing::info!(
                channel = channel.name(),
                "a message from a sender who is not admitted was dropped"
            );
            continue;
        }
        let mut events = channel.events(&message.sender);
        let approver = channel.approver(&message.sender);
        let turn = agent.turn(
            channel.name(),
            &message.sender,
            channel.standing(&message.sender),
            &message.text,
            events.as_mut(),
            approver.as_ref(),
        );
        tokio::select! {
            result = turn => {
                if let Err(e) = result {
                    channel.say(&message.sender, &e.to_string()).await;
                }
            }
            () = channel.stop(&message.sender) => {
                channel.say(&message.sender, "stopped: the turn and its tools were cancelled").await;
            }
        }
    }
}
