//! moat's messaging channels: the services a person already uses, reaching the assistant
//! only when its owner has admitted them.
//!
//! - [`pairing`]: allowlists and pairing codes; held messages; rate limits on codes.
//! - [`adapter`]: what one service's connection provides (messages in, text out).
//! - [`owner`]: the owner's `/pair` commands, in the web chat or a channel they own.
//! - `approvals`: one-time codes by which owners answer a waiting tool call from the
//!   channel (`/approve CODE`, `/deny CODE`).
//! - [`hub`]: the channels at run time: reconnecting, policy, turns per sender, status.
//! - [`irc`]: IRC, with TLS, SASL and a flood-safe send queue.
//! - [`matrix`]: Matrix with end-to-end encryption (matrix-sdk).
//! - [`telegram`]: Telegram's Bot API, long polling.
//! - [`discord`]: Discord's gateway WebSocket and REST API.
//! - [`email`]: IMAP IDLE in, SMTP out, senders vouched for by the receiving server.
//! - [`webhook`]: signed webhooks in (a route of the server) and out, and the [`webhook::Hook`]
//!   the server's `/hooks/NAME` route hands requests to (webhooks, Telegram's webhook mode).
//!
//! Every request, approval, denial, expiry, refusal and release is an audit record; the
//! CLI (`moat pairing`, `moat allowlist`, `moat channel`) writes its own.

pub mod adapter;
mod approvals;
pub mod discord;
pub mod email;
pub mod hub;
pub mod irc;
#[cfg(feature = "matrix")]
pub mod matrix;
pub mod owner;
pub mod pairing;
pub mod telegram;
pub mod webhook;

pub use adapter::{Adapter, ChannelError, Incoming, Target};
pub use hub::{Hub, RadioInbox, Spec, Status};
pub use pairing::{Decision, Pairing, PairingError, Request};
