//! moat's home radio: a station that plays the owner's own music library as one
//! continuous stream that any browser or speaker on the home network can listen to.
//!
//! - [`subsonic`]: the library, a Subsonic/OpenSubsonic server (token or `enc:` auth by
//!   the server's version; no credential ever leaves this crate in a URL, log or error).
//! - [`programme`]: the log of planned, airing and aired items in the state store.
//! - [`mixer`]: crossfades, gain normalisation and a limiter, in Rust, on PCM.
//! - [`ffmpeg`]: decoding each track and encoding the station once, as supervised
//!   subprocesses fed by moat (never a shell, never a URL on a command line).
//! - [`framing`] and [`broadcast`]: the encoded stream cut into whole frames or pages and
//!   handed to every listener from one ring; a slow listener is dropped, never waited for.
//! - [`icy`]: the ICY (Shoutcast) metadata blocks players show titles from.
//! - [`station`]: the playout and refill loops and the handle routes use.
//! - [`tts`]: speech for the DJ: engines as subprocesses and a bounded clip cache.
//! - [`dj`]: the host who talks between songs, through a model the binary provides.
//! - [`cast`]: the station on UPnP/DLNA speakers: SSDP discovery and AVTransport control.

mod body;
pub mod broadcast;
pub mod calendar;
pub mod cast;
pub mod context;
pub mod dj;
pub mod ffmpeg;
pub mod framing;
pub mod icy;
pub mod mixer;
pub mod programme;
pub mod station;
pub mod subsonic;
pub mod tts;

pub use station::{Message, Snapshot, Station, StationSettings, Voice};
pub use subsonic::{Subsonic, SubsonicError};
