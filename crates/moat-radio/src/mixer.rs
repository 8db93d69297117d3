//! The mixer: two decks of decoded PCM, a crossfade between them, gain normalisation and
//! a limiter, producing the one signal every listener hears. Pure arithmetic on
//! interleaved stereo `f32` at [`RATE`]; the station feeds the decks and paces the calls.
//!
//! A transition starts when the playing deck's decoder has finished and no more than the
//! crossfade's length is left in it: the rest of that deck fades out while the next one
//! fades in over exactly that many frames. So the fade is as long as configured whenever
//! the track is, there is never a gap between tracks (a deck that has not decoded far
//! enough is waited for by the station, not skipped), and the limiter's instant attack
//! keeps the sum of two loud tracks from clipping.

use std::collections::VecDeque;

pub use moat_core::config::radio::CrossfadeCurve;

/// Frames per second.
pub const RATE: u32 = 44_100;
/// Interleaved channels.
pub const CHANNELS: usize = 2;
/// The largest sample the limiter lets through (-0.2 dBFS).
pub const CEILING: f32 = 0.977;
/// Normalisation never changes a track by more than this (dB).
const MAX_GAIN_DB: f32 = 12.0;
/// ReplayGain's reference loudness, as the RMS level moat measures (dBFS).
const REPLAYGAIN_REFERENCE_DB: f32 = -18.0;

/// The gains of the outgoing and incoming deck at `t` (0 to 1) through a fade.
pub fn fade_gains(curve: CrossfadeCurve, t: f32) -> (f32, f32) {
    let t = t.clamp(0.0, 1.0);
    match curve {
        CrossfadeCurve::Linear => (1.0 - t, t),
        CrossfadeCurve::EqualPower => {
            let a = t * std::f32::consts::FRAC_PI_2;
            (a.cos(), a.sin())
        }
    }
}

/// The RMS level of `samples` in dBFS (`None` for silence).
pub fn rms_db(samples: &[f32]) -> Option<f32> {
    if samples.is_empty() {
        return None;
    }
    let sum: f64 = samples.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
    let rms = (sum / samples.len() as f64).sqrt();
    (rms > 1e-5).then(|| (20.0 * rms.log10()) as f32)
}

/// The linear gain that brings a track to `target_db`: from its ReplayGain track gain
/// when the library has one, else from the level measured on its first seconds, else
/// unity; never more than ±12 dB.
pub fn normalising_gain(
    replay_gain_db: Option<f32>,
    measured_db: Option<f32>,
    target_db: f32,
) -> f32 {
    let db = match (replay_gain_db, measured_db) {
        (Some(rg), _) => rg + (target_db - REPLAYGAIN_REFERENCE_DB),
        (None, Some(level)) => target_db - level,
        (None, None) => 0.0,
    };
    10f32.powf(db.clamp(-MAX_GAIN_DB, MAX_GAIN_DB) / 20.0)
}

/// A stereo-linked peak limiter: instant attack (no sample ever exceeds [`CEILING`]),
/// a release of about a quarter second.
#[derive(Debug, Clone)]
pub struct Limiter {
    gain: f32,
    release: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            gain: 1.0,
            // Per frame: recovers ~63% of the way to unity in 0.25 s.
            release: 1.0 / (0.25 * RATE as f32),
        }
    }
}

impl Limiter {
    /// Limits one frame in place.
    pub fn process(&mut self, l: &mut f32, r: &mut f32) {
        self.gain += (1.0 - self.gain) * self.release;
        let peak = l.abs().max(r.abs());
        if peak * self.gain > CEILING {
            self.gain = CEILING / peak;
        }
        *l *= self.gain;
        *r *= self.gain;
    }
}

/// One track's decoded audio, as far as its decoder has got.
#[derive(Debug, Default)]
pub struct Deck {
    samples: VecDeque<f32>,
    /// The decoder has finished: what is buffered is the whole rest of the track.
    pub finished: bool,
    /// The linear gain applied to every sample.
    pub gain: f32,
    /// Frames played so far.
    pub played: u64,
}

impl Deck {
    /// An empty deck at unity gain.
    pub fn new() -> Deck {
        Deck {
            gain: 1.0,
            ..Deck::default()
        }
    }

    /// Appends decoded interleaved samples.
    pub fn push(&mut self, samples: &[f32]) {
        self.samples.extend(samples);
    }

    /// Frames buffered.
    pub fn frames(&self) -> usize {
        self.samples.len() / CHANNELS
    }

    /// The first `n` buffered samples (for measuring loudness before airing).
    pub fn head(&self, n: usize) -> Vec<f32> {
        self.samples.iter().take(n).copied().collect()
    }

    /// Ends the track after `frames` more frames (a skip): the rest is dropped.
    pub fn cut_after(&mut self, frames: usize) {
        self.samples.truncate(frames * CHANNELS);
        self.finished = true;
    }

    pub(crate) fn pop(&mut self) -> (f32, f32) {
        let l = self.samples.pop_front().unwrap_or(0.0);
        let r = self.samples.pop_front().unwrap_or(0.0);
        self.played += 1;
        (l * self.gain, r * self.gain)
    }
}

/// What a call to [`Mixer::mix`] did besides producing audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MixReport {
    /// A fade to the next deck began (the next track is on air from here).
    pub fade_started: bool,
    /// The playing deck ran out: the caller makes the next deck the playing one.
    pub switched: bool,
    /// Frames of silence because the playing deck had nothing decoded yet.
    pub underrun: usize,
}

/// The crossfading mixer.
#[derive(Debug)]
pub struct Mixer {
    curve: CrossfadeCurve,
    fade_frames: usize,
    limiter: Limiter,
    /// (frames done, total) of the running fade.
    fade: Option<(usize, usize)>,
}

impl Mixer {
    /// A mixer fading over `fade_frames` frames with `curve`.
    pub fn new(curve: CrossfadeCurve, fade_frames: usize) -> Mixer {
        Mixer {
            curve,
            fade_frames,
            limiter: Limiter::default(),
            fade: None,
        }
    }

    /// The configured fade length in frames.
    pub fn fade_frames(&self) -> usize {
        self.fade_frames
    }

    /// Changes the fade length from the next transition on (a running fade finishes as
    /// it began).
    pub fn set_fade_frames(&mut self, frames: usize) {
        self.fade_frames = frames;
    }

    /// Whether a fade is running.
    pub fn fading(&self) -> bool {
        self.fade.is_some()
    }

    /// Mixes `frames` frames from `current` (and `next`, during a transition) into `out`
    /// (interleaved). Stops early, with `switched`, when `current` has run out, so the
    /// caller can swap decks and call again for the rest.
    pub fn mix(
        &mut self,
        current: &mut Deck,
        mut next: Option<&mut Deck>,
        frames: usize,
        out: &mut Vec<f32>,
    ) -> MixReport {
        let mut report = MixReport::default();
        for _ in 0..frames {
            if self.fade.is_none()
                && current.finished
                && current.frames() <= self.fade_frames
                && next.is_some()
            {
                let total = current.frames();
                if total == 0 {
                    report.switched = true;
                    report.fade_started = true;
                    return report;
                }
                self.fade = Some((0, total));
                report.fade_started = true;
            }
            let (mut l, mut r) = match (self.fade, next.as_deref_mut()) {
                (Some((done, total)), Some(incoming)) => {
                    let t = (done as f32 + 0.5) / total as f32;
                    let (g_out, g_in) = fade_gains(self.curve, t);
                    let (ol, or) = current.pop();
                    let (il, ir) = incoming.pop();
                    self.fade = Some((done + 1, total));
                    (ol * g_out + il * g_in, or * g_out + ir * g_in)
                }
                _ => {
                    if current.frames() == 0 {
                        // Not decoded yet, or over with nothing after it: silence.
                        report.underrun += 1;
                        out.extend([0.0, 0.0]);
                        continue;
                    }
                    current.pop()
                }
            };
            self.limiter.process(&mut l, &mut r);
            out.extend([l, r]);
            if let Some((done, total)) = self.fade
                && done >= total
            {
                self.fade = None;
                report.switched = true;
                return report;
            }
        }
        report
    }

    /// Silence (paused, or nothing to play).
    pub fn silence(&mut self, frames: usize, out: &mut Vec<f32>) {
        out.extend(std::iter::repeat_n(0.0, frames * CHANNELS));
    }
}

/// A voice over the music: the music is ducked (its gain lowered over `attack`), the
/// voice comes in once it is down, and the music comes back over `release` after the
/// voice ends. A limiter of its own keeps the sum from clipping.
#[derive(Debug)]
pub struct Overlay {
    duck: f32,
    attack: usize,
    release: usize,
    gain: f32,
    voice: Option<Deck>,
    wait: usize,
    limiter: Limiter,
}

impl Overlay {
    /// Music at `duck_db` (negative) under a voice, reached in `attack` frames, left in
    /// `release` frames.
    pub fn new(duck_db: f32, attack: usize, release: usize) -> Overlay {
        Overlay {
            duck: 10f32.powf(duck_db.min(0.0) / 20.0),
            attack: attack.max(1),
            release: release.max(1),
            gain: 1.0,
            voice: None,
            wait: 0,
            limiter: Limiter::default(),
        }
    }

    /// Starts a voice (a finished deck of its whole clip); one already speaking is cut.
    pub fn speak(&mut self, voice: Deck) {
        self.wait = if self.voice.is_some() { 0 } else { self.attack };
        self.voice = Some(voice);
    }

    /// Whether a voice is on (or the music is ducking for one).
    pub fn speaking(&self) -> bool {
        self.voice.is_some()
    }

    /// Ducks `out` (interleaved music) and adds the voice; true when the voice ended here.
    pub fn process(&mut self, out: &mut [f32]) -> bool {
        if self.voice.is_none() && self.gain >= 1.0 {
            return false;
        }
        let mut ended = false;
        for frame in out.chunks_exact_mut(CHANNELS) {
            let (target, step) = match self.voice {
                Some(_) => (self.duck, (1.0 - self.duck) / self.attack as f32),
                None => (1.0, (1.0 - self.duck) / self.release as f32),
            };
            self.gain = if self.gain > target {
                (self.gain - step).max(target)
            } else {
                (self.gain + step).min(target)
            };
            let (mut l, mut r) = (frame[0] * self.gain, frame[1] * self.gain);
            if let Some(voice) = &mut self.voice {
                if self.wait > 0 {
                    self.wait -= 1;
                } else if voice.frames() > 0 {
                    let (vl, vr) = voice.pop();
                    l += vl;
                    r += vr;
                } else {
                    self.voice = None;
                    ended = true;
                }
            }
            self.limiter.process(&mut l, &mut r);
            frame[0] = l;
            frame[1] = r;
        }
        ended
    }
}

/// Interleaved `f32` to little-endian signed 16-bit, as the encoder reads it.
pub fn to_s16le(samples: &[f32], out: &mut Vec<u8>) {
    out.reserve(samples.len() * 2);
    for &s in samples {
        let v = (s.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Little-endian signed 16-bit (as the decoder writes it) to `f32`; an odd trailing
/// byte is left for the next call, whose bytes it begins.
pub fn from_s16le(bytes: &[u8], out: &mut Vec<f32>) {
    for pair in bytes.chunks_exact(2) {
        out.push(f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stereo sine at `freq` Hz, `amp`, `secs` long.
    fn tone(freq: f32, amp: f32, secs: f32) -> Vec<f32> {
        let n = (secs * RATE as f32) as usize;
        (0..n)
            .flat_map(|i| {
                let v = amp * (2.0 * std::f32::consts::PI * freq * i as f32 / RATE as f32).sin();
                [v, v]
            })
            .collect()
    }

    fn finished_deck(samples: &[f32]) -> Deck {
        let mut d = Deck::new();
        d.push(samples);
        d.finished = true;
        d
    }

    /// The amplitude of `freq` in a mono window (Goertzel).
    fn level_at(freq: f32, window: &[f32]) -> f32 {
        let n = window.len() as f32;
        let w = 2.0 * std::f32::consts::PI * freq / RATE as f32;
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f32, 0.0f32);
        for &x in window {
            let s0 = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / n
    }

    /// Mixes track `a` into `b` and returns the whole signal (left channel).
    fn run(curve: CrossfadeCurve, fade_secs: f32, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut mixer = Mixer::new(curve, (fade_secs * RATE as f32) as usize);
        let mut cur = finished_deck(a);
        let mut next = finished_deck(b);
        let mut out = Vec::new();
        let mut switched = false;
        while !switched {
            let r = mixer.mix(&mut cur, Some(&mut next), 1024, &mut out);
            assert_eq!(r.underrun, 0);
            switched = r.switched;
        }
        let mut after = Deck::new();
        std::mem::swap(&mut after, &mut next);
        while after.frames() > 0 {
            let n = after.frames().min(1024);
            mixer.mix(&mut after, None, n, &mut out);
        }
        out.iter().step_by(2).copied().collect()
    }

    #[test]
    fn a_crossfade_has_the_configured_length_no_gap_and_no_clip() {
        for curve in [CrossfadeCurve::EqualPower, CrossfadeCurve::Linear] {
            // Two full-scale tones: their sum would clip without the limiter.
            let a = tone(440.0, 0.95, 6.0);
            let b = tone(660.0, 0.95, 6.0);
            let fade = 3.0;
            let mono = run(curve, fade, &a, &b);
            // Nothing lost or added: 6 + 6 - 3 seconds.
            let expect = ((12.0 - fade) * RATE as f32) as usize;
            assert!(
                mono.len().abs_diff(expect) <= 2,
                "{curve:?}: {} frames",
                mono.len()
            );
            let peak = mono.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            assert!(peak < 1.0, "{curve:?}: clipped at {peak}");
            // 10 ms windows: the signal never drops out.
            let win = (RATE / 100) as usize;
            for w in mono.chunks_exact(win) {
                let rms = rms_db(w).unwrap_or(-200.0);
                assert!(rms > -20.0, "{curve:?}: a gap ({rms} dBFS)");
            }
            // 50 ms Hann windows (20 Hz resolution): both tones are present together
            // for as long as the fade lasts, and no longer.
            let win = (RATE / 20) as usize;
            let hann: Vec<f32> = (0..win)
                .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / win as f32).cos())
                .collect();
            let mut both = 0;
            for w in mono.chunks_exact(win) {
                let w: Vec<f32> = w.iter().zip(&hann).map(|(s, h)| 2.0 * s * h).collect();
                if level_at(440.0, &w) > 0.01 && level_at(660.0, &w) > 0.01 {
                    both += 1;
                }
            }
            let overlap = both as f32 * 0.05;
            assert!(
                (overlap - fade).abs() < 0.25,
                "{curve:?}: overlap {overlap}s"
            );
        }
    }

    #[test]
    fn no_crossfade_is_gapless() {
        let a = tone(440.0, 0.5, 1.0);
        let b = tone(660.0, 0.5, 1.0);
        let mono = run(CrossfadeCurve::EqualPower, 0.0, &a, &b);
        assert_eq!(mono.len(), 2 * RATE as usize);
    }

    #[test]
    fn a_short_track_fades_over_what_it_has() {
        let a = tone(440.0, 0.5, 1.0);
        let b = tone(660.0, 0.5, 5.0);
        let mono = run(CrossfadeCurve::Linear, 4.0, &a, &b);
        assert_eq!(mono.len(), 5 * RATE as usize);
    }

    #[test]
    fn an_unfinished_deck_underruns_into_silence() {
        let mut mixer = Mixer::new(CrossfadeCurve::Linear, 100);
        let mut cur = Deck::new();
        cur.push(&[0.1; 20]);
        let mut out = Vec::new();
        let r = mixer.mix(&mut cur, None, 20, &mut out);
        assert_eq!(r.underrun, 10);
        assert_eq!(out.len(), 40);
    }

    #[test]
    fn a_voice_ducks_the_music_under_it_and_the_music_comes_back() {
        let attack = (0.3 * RATE as f32) as usize;
        let release = (0.8 * RATE as f32) as usize;
        let mut overlay = Overlay::new(-12.0, attack, release);
        let mut voice = finished_deck(&tone(660.0, 0.8, 2.0));
        voice.gain = 1.0;
        overlay.speak(voice);
        let mut music = tone(440.0, 0.9, 5.0);
        let mut ended_at = None;
        for (i, block) in music.chunks_mut(2048).enumerate() {
            if overlay.process(block) {
                ended_at = Some(i * 1024);
            }
        }
        let ended_at = ended_at.expect("the voice ended");
        // 0.3 s of ducking, then 2 s of voice.
        let expect = attack + 2 * RATE as usize;
        assert!(
            ended_at.abs_diff(expect) <= 1024,
            "ended at frame {ended_at}, expected {expect}"
        );
        assert!(!overlay.speaking());
        let mono: Vec<f32> = music.iter().step_by(2).copied().collect();
        let at = |secs: f32| &mono[(secs * RATE as f32) as usize..][..(RATE / 20) as usize];
        // Before: music only. Under the voice: music 12 dB down, voice on top. After the
        // release: music back.
        assert!(level_at(440.0, at(0.0)) > 0.8 && level_at(660.0, at(0.0)) < 0.01);
        let ducked = level_at(440.0, at(1.2));
        assert!((ducked / 0.9 - 0.251).abs() < 0.05, "ducked to {ducked}");
        assert!(level_at(660.0, at(1.2)) > 0.6, "the voice is not there");
        assert!(
            level_at(440.0, at(4.0)) > 0.85,
            "the music did not come back"
        );
        assert!(mono.iter().all(|s| s.abs() < 1.0), "clipped");
    }

    #[test]
    fn gain_prefers_replaygain_and_is_bounded() {
        let g = normalising_gain(Some(-6.0), Some(-3.0), -18.0);
        assert!((20.0 * g.log10() + 6.0).abs() < 0.01);
        let g = normalising_gain(None, Some(-30.0), -18.0);
        assert!((20.0 * g.log10() - 12.0).abs() < 0.01);
        let g = normalising_gain(None, Some(-60.0), -18.0);
        assert!((20.0 * g.log10() - 12.0).abs() < 0.01, "clamped");
        assert_eq!(normalising_gain(None, None, -18.0), 1.0);
    }

    #[test]
    fn pcm_round_trips() {
        let samples = [0.0, 0.5, -0.5, 1.0, -1.0];
        let mut bytes = Vec::new();
        to_s16le(&samples, &mut bytes);
        let mut back = Vec::new();
        from_s16le(&bytes, &mut back);
        for (a, b) in samples.iter().zip(&back) {
            assert!((a - b).abs() < 1e-3);
        }
    }
}
