//! Matrix, through the client-server API with end-to-end encryption (matrix-sdk): DMs
//! from common clients are encrypted by default, and a bot that cannot decrypt hears
//! nothing. The bot logs in with a password, keeps its device and its keys in an
//! encrypted SQLite store of its own under MOAT_HOME (so it stays the same device across
//! restarts, and people's clients keep trusting it), joins the DMs it is invited to,
//! and answers in the same (encrypted) room.
//!
//! A sender is their Matrix user id (`@alice:example.org`), which their homeserver
//! authenticates. In a room with more people the bot answers only when mentioned.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use matrix_sdk::config::{RequestConfig, SyncSettings};
use matrix_sdk::ruma::events::room::member::StrippedRoomMemberEvent;
use matrix_sdk::ruma::events::room::message::{
    MessageType, OriginalSyncRoomMessageEvent, Relation, ReplacementMetadata,
    RoomMessageEventContent,
};
use matrix_sdk::ruma::{MilliSecondsSinceUnixEpoch, OwnedRoomId, UserId};
use matrix_sdk::{Client, Room, RoomState};
use moat_core::secret::SecretString;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::adapter::{Adapter, ChannelError, Incoming, Target};

/// Matrix has no hard limit below 64 KiB an event; people read less at once.
pub const MAX_PIECE: usize = 16 * 1024;

/// How long one sync request waits for news on the server.
const LONG_POLL: Duration = Duration::from_secs(30);
/// The least time from one sync request to the next.
const MIN_SYNC_GAP: Duration = Duration::from_millis(50);

/// How to reach one Matrix account.
#[derive(Clone)]
pub struct MatrixSettings {
    /// The homeserver's client-server API base (`https://matrix.example.org`).
    pub homeserver: url::Url,
    /// The bot's user id or localpart.
    pub user: String,
    /// Its password.
    pub password: SecretString,
    /// Where its device and keys are kept (0700, under MOAT_HOME).
    pub state_dir: PathBuf,
    /// Rooms (ids or aliases) it joins when invited besides DMs.
    pub rooms: Vec<String>,
    /// The most text one message carries.
    pub max_piece: usize,
}

/// A Matrix account, synced by the hub.
pub struct Matrix {
    settings: MatrixSettings,
    client: tokio::sync::OnceCell<Client>,
    shared: Arc<Shared>,
}

/// What the event handlers share with the adapter.
#[derive(Default)]
struct Shared {
    /// The running connection's inbox.
    inbox: Mutex<Option<mpsc::Sender<Incoming>>>,
    /// Each user's DM room, as their messages showed it.
    dms: Mutex<HashMap<String, OwnedRoomId>>,
    /// False during a first sync, whose backlog is history, not messages to answer.
    live: AtomicBool,
    /// Rooms the bot may join when invited (besides DMs).
    rooms: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Matrix {
    /// An adapter for `settings`.
    pub fn new(settings: MatrixSettings) -> Matrix {
        let shared = Arc::new(Shared {
            rooms: settings.rooms.clone(),
            ..Default::default()
        });
        Matrix {
            settings,
            client: tokio::sync::OnceCell::new(),
            shared,
        }
    }

    /// The store's passphrase: derived from the account's password, so nothing more
    /// needs keeping (a changed password starts a new store and device).
    fn passphrase(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"moat matrix store\0");
        h.update(self.settings.password.expose().as_bytes());
        hex::encode(h.finalize())
    }

    /// The logged-in client: built and logged in once, with the device of earlier runs.
    async fn client(&self) -> Result<&Client, ChannelError> {
        self.client
            .get_or_try_init(|| async {
                match self.login().await {
                    Err(ChannelError::Connection(e)) if e.contains("store") => {
                        // A store that no longer opens (the password changed, the files
                        // were damaged) is set aside; the bot starts as a new device.
                        let aside = self.settings.state_dir.with_extension(format!(
                            "old-{}",
                            crate::hub::now_ms()
                        ));
                        tracing::warn!(
                            "the Matrix store in {} does not open ({e}); moved to {} and starting a new device",
                            self.settings.state_dir.display(),
                            aside.display()
                        );
                        let _ = std::fs::rename(&self.settings.state_dir, &aside);
                        self.login().await
                    }
                    other => other,
                }
            })
            .await
    }

    async fn login(&self) -> Result<Client, ChannelError> {
        let s = &self.settings;
        create_private_dir(&s.state_dir).map_err(|e| {
            ChannelError::Refused(format!("cannot create {}: {e}", s.state_dir.display()))
        })?;
        let client = Client::builder()
            .homeserver_url(s.homeserver.as_str())
            .sqlite_store(s.state_dir.join("store"), Some(&self.passphrase()))
            .request_config(
                RequestConfig::new()
                    .retry_limit(2)
                    .timeout(Duration::from_secs(60)),
            )
            .build()
            .await
            .map_err(|e| {
                ChannelError::Connection(format!("opening the Matrix store failed: {e}"))
            })?;
        let device_file = s.state_dir.join("device_id");
        let device = std::fs::read_to_string(&device_file).ok();
        let mut login = client
            .matrix_auth()
            .login_username(&s.user, s.password.expose())
            .initial_device_display_name("moat");
        if let Some(d) = device.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
            login = login.device_id(d);
        }
        let answer = login.send().await.map_err(|e| {
            let text = e.to_string();
            if text.contains("M_FORBIDDEN") || text.contains("403") {
                ChannelError::Refused(format!(
                    "the homeserver refused the login of {:?}; check the user and the vault secret named by password_secret",
                    s.user
                ))
            } else if text.contains("store") || text.contains("account in the store") {
                ChannelError::Connection(format!("the Matrix store does not match the account: {text}"))
            } else {
                ChannelError::Connection(format!("logging in failed: {}", short(&text)))
            }
        })?;
        let _ = std::fs::write(&device_file, answer.device_id.as_str());
        self.handlers(&client);
        Ok(client)
    }

    fn handlers(&self, client: &Client) {
        let shared = self.shared.clone();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
            let shared = shared.clone();
            async move { on_message(&shared, ev, room).await }
        });
        let shared = self.shared.clone();
        client.add_event_handler(
            move |ev: StrippedRoomMemberEvent, room: Room, client: Client| {
                let shared = shared.clone();
                async move { on_invite(&shared, ev, room, client).await }
            },
        );
    }

    async fn room_for(&self, to: &Target) -> Result<Room, ChannelError> {
        let client = self.client().await?;
        match to {
            Target::Room(id) => {
                let id = <&matrix_sdk::ruma::RoomId>::try_from(id.as_str())
                    .map_err(|_| ChannelError::Send(format!("{id:?} is not a room id")))?;
                client
                    .get_room(id)
                    .ok_or_else(|| ChannelError::Send("the bot is not in that room".into()))
            }
            Target::Direct(user) => {
                let known = lock(&self.shared.dms).get(user).cloned();
                if let Some(room) = known.and_then(|id| client.get_room(&id)) {
                    return Ok(room);
                }
                let user = <&UserId>::try_from(user.as_str())
                    .map_err(|_| ChannelError::Send(format!("{user:?} is not a Matrix user id")))?;
                if let Some(room) = client.get_dm_room(user) {
                    return Ok(room);
                }
                client.create_dm(user).await.map_err(|e| {
                    ChannelError::Send(format!("opening a DM failed: {}", short(&e.to_string())))
                })
            }
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The first line of an error, at most 200 characters, without control characters.
fn short(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

async fn on_message(shared: &Shared, ev: OriginalSyncRoomMessageEvent, room: Room) {
    if !shared.live.load(Ordering::SeqCst) || room.state() != RoomState::Joined {
        return;
    }
    let me = room.own_user_id().to_owned();
    if ev.sender == me {
        return;
    }
    // An edit of an earlier message is not a new message.
    if matches!(ev.content.relates_to, Some(Relation::Replacement(_))) {
        return;
    }
    let MessageType::Text(text) = &ev.content.msgtype else {
        return;
    };
    tracing::debug!(
        room = %room.room_id(),
        age_ms = u64::from(MilliSecondsSinceUnixEpoch::now().get()).saturating_sub(u64::from(ev.origin_server_ts.get())),
        "a message arrived"
    );
    let sender = ev.sender.to_string();
    let direct = room.is_direct().await.unwrap_or(false) || room.joined_members_count() <= 2;
    let incoming = if direct {
        lock(&shared.dms).insert(sender.clone(), room.room_id().to_owned());
        Incoming {
            place: Target::Direct(sender.clone()),
            display: sender.clone(),
            sender,
            mentioned: true,
            text: text.body.clone(),
        }
    } else {
        let by_mention = ev
            .content
            .mentions
            .as_ref()
            .is_some_and(|m| m.user_ids.contains(&me));
        let (named, rest) = named(&text.body, me.localpart());
        Incoming {
            place: Target::Room(room.room_id().to_string()),
            display: sender.clone(),
            sender,
            mentioned: by_mention || named,
            text: rest,
        }
    };
    let inbox = lock(&shared.inbox).clone();
    if let Some(inbox) = inbox {
        let _ = inbox.send(incoming).await;
    }
}

/// Whether `body` addresses `name` (`name: ...` or the name as a word), and the body
/// without a leading address.
fn named(body: &str, name: &str) -> (bool, String) {
    let lower = name.to_lowercase();
    if let Some((head, rest)) = body.split_once([':', ','])
        && head.trim().trim_start_matches('@').to_lowercase() == lower
    {
        return (true, rest.trim().to_string());
    }
    let word = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
            == lower
    };
    (body.split_whitespace().any(word), body.to_string())
}

async fn on_invite(shared: &Shared, ev: StrippedRoomMemberEvent, room: Room, client: Client) {
    let Some(me) = client.user_id() else {
        return;
    };
    if ev.state_key != me || room.state() != RoomState::Invited {
        return;
    }
    // DMs are joined (pairing decides who is answered); other rooms only when listed.
    let listed = shared.rooms.iter().any(|r| {
        r == room.room_id().as_str()
            || room
                .canonical_alias()
                .is_some_and(|a| a.as_str() == r.as_str())
    });
    let direct = ev.content.is_direct == Some(true);
    if !direct && !listed {
        tracing::info!(room = %room.room_id(), "an invite to a room not in rooms was ignored");
        return;
    }
    // The homeserver may not have finished the invite when it tells us: retry a while.
    let mut wait = Duration::from_millis(500);
    for _ in 0..6 {
        match room.join().await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(room = %room.room_id(), "joining failed, retrying: {e}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    }
    tracing::warn!(room = %room.room_id(), "could not join a room the bot was invited to");
}

#[async_trait::async_trait]
impl Adapter for Matrix {
    async fn run(
        &self,
        inbox: mpsc::Sender<Incoming>,
        connected: &(dyn Fn() + Send + Sync),
    ) -> Result<(), ChannelError> {
        let client = self.client().await?;
        *lock(&self.shared.inbox) = Some(inbox);
        let marker = self.settings.state_dir.join("synced");
        // A brand-new store's first sync brings history, which is not answered; a known
        // store's brings what was said while moat was away, which is.
        let fresh = !marker.exists();
        self.shared.live.store(!fresh, Ordering::SeqCst);
        client
            .sync_once(SyncSettings::default().timeout(Duration::ZERO))
            .await
            .map_err(|e| {
                ChannelError::Connection(format!(
                    "syncing with the homeserver failed: {}",
                    short(&e.to_string())
                ))
            })?;
        if fresh {
            let _ = std::fs::write(&marker, b"");
        }
        self.shared.live.store(true, Ordering::SeqCst);
        connected();
        // Our own loop, not matrix-sdk's `sync`: that one waits a second before the next
        // request whenever the last came back within a second, which on a busy bot (its own
        // typing notices and replies wake its long poll) held every message a second.
        // This one keeps requests at least MIN_SYNC_GAP apart, enough to spare a server
        // that ignores the long-poll timeout (20 requests a second at most).
        let settings = SyncSettings::default().timeout(LONG_POLL);
        loop {
            let started = std::time::Instant::now();
            client.sync_once(settings.clone()).await.map_err(|e| {
                ChannelError::Connection(format!(
                    "syncing with the homeserver failed: {}",
                    short(&e.to_string())
                ))
            })?;
            if let Some(rest) = MIN_SYNC_GAP.checked_sub(started.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }

    async fn send(&self, to: &Target, text: &str) -> Result<(), ChannelError> {
        self.send_editable(to, text).await.map(|_| ())
    }

    fn edits(&self) -> bool {
        true
    }

    async fn send_editable(&self, to: &Target, text: &str) -> Result<String, ChannelError> {
        let room = self.room_for(to).await?;
        room.send(RoomMessageEventContent::text_plain(text))
            .await
            .map(|sent| sent.response.event_id.to_string())
            .map_err(|e| ChannelError::Send(format!("sending failed: {}", short(&e.to_string()))))
    }

    async fn edit(&self, to: &Target, id: &str, text: &str) -> Result<(), ChannelError> {
        let room = self.room_for(to).await?;
        let event = matrix_sdk::ruma::OwnedEventId::try_from(id)
            .map_err(|_| ChannelError::Send("not a Matrix event id".into()))?;
        let content = RoomMessageEventContent::text_plain(text)
            .make_replacement(ReplacementMetadata::new(event, None));
        room.send(content)
            .await
            .map(|_| ())
            .map_err(|e| ChannelError::Send(format!("editing failed: {}", short(&e.to_string()))))
    }

    async fn typing(&self, to: &Target) {
        if let Ok(room) = self.room_for(to).await
            && let Err(e) = room.typing_notice(true).await
        {
            tracing::debug!("no typing notice: {e}");
        }
    }

    fn max_piece(&self) -> usize {
        self.settings.max_piece.min(MAX_PIECE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found() {
        assert_eq!(named("moatbot: hello", "moatbot"), (true, "hello".into()));
        assert_eq!(named("@MoatBot, hi", "moatbot"), (true, "hi".into()));
        assert!(named("ask moatbot later", "moatbot").0);
        assert!(!named("moatbots are fun", "moatbot").0);
    }
}
