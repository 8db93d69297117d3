//! ffmpeg as a supervised subprocess: a decoder per track (file bytes in on stdin, PCM out
//! on stdout) and one encoder for the station (PCM in, MP3 or Ogg out). Never a shell,
//! never a URL or credential on its command line (moat fetches and feeds the bytes), its
//! stderr logged line by line through the redacting logger, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use moat_core::config::radio::StreamFormat;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::broadcast::Broadcast;
use crate::framing::Framer;
use crate::mixer::{CHANNELS, RATE, from_s16le};

/// Decoded PCM blocks waiting for the mixer, per decoder: with 64 KiB reads, about a
/// second and a half; then ffmpeg waits, and so does the download.
const DECODED_BLOCKS: usize = 16;
/// The longest a track's download may go without a byte.
const DOWNLOAD_IDLE: Duration = Duration::from_secs(30);
/// The longest one write of PCM to the encoder may take before it counts as hung.
const ENCODER_STALL: Duration = Duration::from_secs(5);

/// Whether `ffmpeg` can be run, and its version line.
pub async fn version(ffmpeg: &Path) -> Result<String, String> {
    let out = Command::new(ffmpeg)
        .arg("-version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {}: {e}", ffmpeg.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("ffmpeg").to_string())
}

fn command(ffmpeg: &Path) -> Command {
    let mut c = Command::new(ffmpeg);
    c.args(["-hide_banner", "-nostats", "-loglevel", "error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Logs a child's stderr, one bounded line at a time (the logger redacts).
fn log_stderr(child: &mut Child, what: &'static str) {
    if let Some(err) = child.stderr.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line: String = line.chars().filter(|c| !c.is_control()).take(300).collect();
                tracing::warn!(target: "moat_radio::ffmpeg", process = what, "{line}");
            }
        });
    }
}

/// One track being decoded.
#[derive(Debug)]
pub struct Decoder {
    /// Interleaved stereo `f32` blocks; closed when the track is over.
    pub pcm: mpsc::Receiver<Vec<f32>>,
    _child: Child,
}

/// Starts decoding `body` (a file's bytes, as they arrive) into PCM at [`RATE`].
pub fn decode<B>(ffmpeg: &Path, body: B) -> std::io::Result<Decoder>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Display + Send,
{
    let rate = RATE.to_string();
    let channels = CHANNELS.to_string();
    let mut child = command(ffmpeg)
        .args(["-i", "pipe:0", "-vn", "-sn", "-dn", "-map", "0:a:0"])
        .args(["-f", "s16le", "-acodec", "pcm_s16le"])
        .args(["-ac", &channels, "-ar", &rate, "pipe:1"])
        .spawn()?;
    log_stderr(&mut child, "decoder");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    tokio::spawn(async move {
        let mut body = body;
        loop {
            // A download that goes quiet without breaking (a hung server, a half-open
            // connection) ends the track like one that breaks.
            let frame = match tokio::time::timeout(DOWNLOAD_IDLE, body.frame()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(
                        "a track's download stalled for {}s; the track ends there",
                        DOWNLOAD_IDLE.as_secs()
                    );
                    return;
                }
            };
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data()
                        && stdin.write_all(&data).await.is_err()
                    {
                        return; // the decoder is gone (skipped, or it failed)
                    }
                }
                Err(e) => {
                    // The track ends where the download did; the station moves on.
                    tracing::warn!("a track's download broke off: {e}");
                    return;
                }
            }
        }
    });
    let (tx, pcm) = mpsc::channel(DECODED_BLOCKS);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry: Option<u8> = None;
        loop {
            let n = match stdout.read(&mut buf[1..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let bytes = match carry.take() {
                Some(b) => {
                    buf[0] = b;
                    &buf[..=n]
                }
                None => &buf[1..=n],
            };
            let whole = bytes.len() & !1;
            if whole < bytes.len() {
                carry = Some(bytes[whole]);
            }
            let mut samples = Vec::with_capacity(whole / 2);
            from_s16le(&bytes[..whole], &mut samples);
            if tx.send(samples).await.is_err() {
                return;
            }
        }
    });
    Ok(Decoder { pcm, _child: child })
}

/// The station's encoder, restarted whenever it dies.
#[derive(Debug, Clone)]
pub struct Encoder {
    pcm: mpsc::Sender<Bytes>,
}

impl Encoder {
    /// Starts encoding to `format` at `kbps`, publishing whole frames or pages to `out`.
    pub fn start(ffmpeg: PathBuf, format: StreamFormat, kbps: u32, out: Arc<Broadcast>) -> Encoder {
        // A few blocks of slack; the mixer is paced, so this never fills unless ffmpeg
        // hangs, and then the mixer's sends fail fast (try_send) rather than stall.
        let (pcm, rx) = mpsc::channel::<Bytes>(64);
        tokio::spawn(supervise(ffmpeg, format, kbps, out, rx));
        Encoder { pcm }
    }

    /// Sends PCM (s16le, interleaved stereo at [`RATE`]); false if the encoder is
    /// backed up (the block is dropped, a glitch rather than a stall).
    pub fn send(&self, pcm: Bytes) -> bool {
        self.pcm.try_send(pcm).is_ok()
    }
}

async fn supervise(
    ffmpeg: PathBuf,
    format: StreamFormat,
    kbps: u32,
    out: Arc<Broadcast>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let started = std::time::Instant::now();
        // A run that lasted a while was a healthy one: the next failure starts over.
        let result = run_encoder(&ffmpeg, format, kbps, &out, &mut rx).await;
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(200);
        }
        match result {
            Ok(()) => return, // the station stopped
            Err(why) => {
                tracing::error!("the radio encoder stopped ({why}); restarting it");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                // Drop what piled up meanwhile: the stream resumes at the present.
                while rx.try_recv().is_ok() {}
            }
        }
    }
}

/// Runs one encoder process until the PCM ends (Ok) or the process fails (Err).
async fn run_encoder(
    ffmpeg: &Path,
    format: StreamFormat,
    kbps: u32,
    out: &Arc<Broadcast>,
    rx: &mut mpsc::Receiver<Bytes>,
) -> Result<(), String> {
    let bitrate = format!("{kbps}k");
    let mut cmd = command(ffmpeg);
    // Raw PCM needs no probing; ffmpeg's default (5 s of input) would hold back the first
    // encoded byte by most of a second.
    cmd.args(["-probesize", "32", "-analyzeduration", "0"]);
    cmd.args([
        "-f",
        "s16le",
        "-ar",
        &RATE.to_string(),
        "-ac",
        &CHANNELS.to_string(),
    ])
    .args(["-i", "pipe:0"]);
    let mut framer = match format {
        StreamFormat::Mp3 => {
            cmd.args(["-c:a", "libmp3lame", "-b:a", &bitrate]).args([
                "-f",
                "mp3",
                "-write_xing",
                "0",
                "-id3v2_version",
                "0",
            ]);
            Framer::mp3()
        }
        StreamFormat::Ogg => {
            cmd.args(["-c:a", "libopus", "-b:a", &bitrate, "-ar", "48000"])
                .args(["-f", "ogg", "-page_duration", "100000"]);
            Framer::ogg()
        }
    };
    cmd.args(["-flush_packets", "1", "pipe:1"]);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ffmpeg.display()))?;
    log_stderr(&mut child, "encoder");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = {
        let out = out.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        let framed = framer.push(&buf[..n]);
                        if let Some(h) = framed.headers {
                            out.set_headers(h);
                        }
                        if let Some(units) = framed.units {
                            out.publish(units);
                        }
                    }
                }
            }
        })
    };
    let result = loop {
        tokio::select! {
            block = rx.recv() => match block {
                Some(b) => match tokio::time::timeout(ENCODER_STALL, stdin.write_all(&b)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(format!("it stopped reading ({e})")),
                    Err(_) => break Err(format!("it took no input for {}s", ENCODER_STALL.as_secs())),
                },
                None => break Ok(()),
            },
            status = child.wait() => {
                break Err(match status {
                    Ok(s) => format!("it exited with {s}"),
                    Err(e) => e.to_string(),
                });
            }
        }
    };
    drop(stdin);
    let _ = child.kill().await;
    reader.abort();
    result
}
