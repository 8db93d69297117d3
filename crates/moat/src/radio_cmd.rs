//! `moat radio`: the music libraries in config.toml, and the running station.

use anyhow::anyhow;
use moat_core::config::radio::{LibraryConfig, valid_library_name};
use moat_core::home::Home;

use crate::app::config_edit::{read_doc, table_at, write_doc};
use crate::cli::{CastCommand, LibraryCommand, RadioCommand, TtsCommand};
use crate::{Failure, app, load_config};

/// `moat radio`.
pub(crate) fn run(home: &Home, command: &RadioCommand) -> Result<(), Failure> {
    match command {
        RadioCommand::Library(LibraryCommand::Add {
            name,
            url,
            user,
            password_secret,
            replace,
        }) => add(
            home,
            name,
            LibraryConfig {
                url: url.clone(),
                user: user.clone(),
                password_secret: password_secret.clone(),
            },
            *replace,
        ),
        RadioCommand::Library(LibraryCommand::List) => list(home),
        RadioCommand::Library(LibraryCommand::Test { name }) => test(home, name),
        RadioCommand::Library(LibraryCommand::Remove { name }) => remove(home, name),
        RadioCommand::Open => open(home),
        RadioCommand::Now => now(home),
        RadioCommand::Status => status(home),
        RadioCommand::Tts(TtsCommand::Say { text, voice, out }) => {
            say(home, text, voice.as_deref(), out.as_deref())
        }
        RadioCommand::Cast(command) => cast(home, command),
    }
}

/// `moat radio status`: the running server's `/radio/api/status`, for a person.
fn status(home: &Home) -> Result<(), Failure> {
    let endpoint = crate::status::endpoint(home)?;
    if endpoint.tls {
        return Err(Failure::usage(anyhow!(
            "the main listener uses TLS, which `moat radio status` does not speak yet; use curl https://HOST:{}/radio/api/status with the control token",
            endpoint.addr.port()
        )));
    }
    let body = crate::status::get(endpoint.addr, "/radio/api/status", &endpoint.token)
        .map_err(|e| Failure::runtime(anyhow!("the radio: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| Failure::runtime(anyhow!("the server's answer is not JSON; is it moat?")))?;
    print!("{}", status_text(&v));
    Ok(())
}

fn events(n: u64) -> String {
    format!("{n} event{}", if n == 1 { "" } else { "s" })
}

/// The status as lines a person reads.
fn status_text(v: &serde_json::Value) -> String {
    use std::fmt::Write;
    let s = |x: &serde_json::Value| x.as_str().unwrap_or("?").to_string();
    let mut out = String::new();
    match v["station"].as_object() {
        Some(st) => {
            let now = &st["now"];
            let playing = if now.is_object() {
                format!(" — {} — {}", s(&now["title"]), s(&now["artist"]))
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "station: {}{playing}; {} listening",
                s(&st["state"]),
                st["listeners"]
            );
            if let Some(p) = st["problem"].as_str() {
                let _ = writeln!(out, "  problem: {p}");
            }
        }
        None => {
            let _ = writeln!(out, "station: not playing: {}", s(&v["station_problem"]));
        }
    }
    let _ = writeln!(
        out,
        "voice: {}",
        v["voice"].as_str().unwrap_or("none (moat's log says why)")
    );
    let dj = &v["dj"];
    if dj["running"] == true {
        let _ = write!(out, "dj: on, {} segments aired", dj["segments"]);
        if let Some(t) = dj["last_talk"].as_object() {
            let _ = write!(out, "; last at {}: \"{}\"", s(&t["at"]), s(&t["words"]));
        }
        let _ = writeln!(out);
        if let Some(t) = dj["last_skip"].as_object() {
            let _ = writeln!(out, "  last skipped at {}: {}", s(&t["at"]), s(&t["why"]));
        }
    } else {
        let _ = writeln!(out, "dj: off: {}", dj["why_not"].as_str().unwrap_or("?"));
    }
    let allowed = &v["allowed"];
    let _ = writeln!(
        out,
        "now: {}",
        match allowed["mode"].as_str() {
            Some("everything") => "music and talk".to_string(),
            Some("music-only") => format!("music only: {}", s(&allowed["why"])),
            Some("silence") => format!("silence: {}", s(&allowed["why"])),
            _ => "?".to_string(),
        }
    );
    let hours = |k: &str| {
        v[k].as_array()
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().map(&s).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "none".into())
    };
    let _ = writeln!(
        out,
        "quiet hours: {}; silent hours: {}",
        hours("quiet_hours"),
        hours("silent_hours")
    );
    for c in v["calendars"].as_array().into_iter().flatten() {
        let state = match (c["error"].as_str(), c["events_ahead"].as_u64()) {
            (Some(e), Some(n)) => format!("failing: {e} (keeps its last read: {})", events(n)),
            (Some(e), None) => format!("failing: {e}"),
            (None, Some(n)) => format!("{} in the next 48 h", events(n)),
            (None, None) => "not read yet".into(),
        };
        let _ = writeln!(
            out,
            "calendar {} ({}): {state}",
            s(&c["name"]),
            s(&c["use"])
        );
    }
    match v["weather"].as_object() {
        Some(w) => {
            let now = &w["now"];
            let line = if now.is_object() {
                format!(
                    "{}, {}{}{}",
                    s(&now["description"]),
                    now["temperature"],
                    s(&now["unit"]),
                    now["place"]
                        .as_str()
                        .filter(|p| !p.is_empty())
                        .map(|p| format!(" in {p}"))
                        .unwrap_or_default()
                )
            } else {
                "nothing fresh".into()
            };
            let _ = write!(out, "weather: {line}");
            if let Some(e) = w["error"].as_str() {
                let _ = write!(out, "; failing: {e}");
            }
            let _ = writeln!(out);
        }
        None => {
            let _ = writeln!(out, "weather: not configured");
        }
    }
    for why in v["disabled"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "off: {}", s(why));
    }
    let _ = writeln!(
        out,
        "casting: {}",
        if v["cast"]["available"] == true {
            "available (`moat radio cast list`)".to_string()
        } else {
            format!("off: {}", s(&v["cast"]["why"]))
        }
    );
    out
}

/// `moat radio cast`: asks the running server, which finds and drives the speakers.
fn cast(home: &Home, command: &CastCommand) -> Result<(), Failure> {
    let endpoint = crate::status::endpoint(home)?;
    if endpoint.tls {
        return Err(Failure::usage(anyhow!(
            "the main listener uses TLS, which `moat radio cast` does not speak yet; use the player page (`moat radio open`)"
        )));
    }
    let call = |path: &str, body: Option<serde_json::Value>| {
        let answer = match &body {
            Some(b) => crate::status::post(endpoint.addr, path, &endpoint.token, b),
            None => crate::status::get(endpoint.addr, path, &endpoint.token),
        };
        let text = answer.map_err(|e| Failure::runtime(anyhow!("casting: {e}")))?;
        serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|_| Failure::runtime(anyhow!("the server's answer is not JSON; is it moat?")))
    };
    match command {
        CastCommand::List { wait } => {
            if !(wait.is_finite() && *wait > 0.0) {
                return Err(Failure::usage(anyhow!(
                    "--wait is a number of seconds above 0"
                )));
            }
            let v = call(&format!("/radio/api/cast?wait={wait}"), None)?;
            let speakers = v["speakers"].as_array().cloned().unwrap_or_default();
            if speakers.is_empty() {
                println!(
                    "no speaker answered in {wait} s (UPnP/DLNA renderers on the LAN listener's network; is yours on and on the same network?)"
                );
            }
            for s in speakers {
                let state = s["state"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| s["error"].as_str().map(|e| format!("? ({e})")))
                    .unwrap_or_else(|| "?".into());
                let volume = s["volume"]
                    .as_u64()
                    .map_or(String::new(), |v| format!(", volume {v}"));
                println!(
                    "{}{} — {} at {}, {state}{volume}  [{}]",
                    s["name"].as_str().unwrap_or("?"),
                    if s["casting"] == true {
                        " (playing the radio)"
                    } else {
                        ""
                    },
                    s["model"].as_str().unwrap_or("?"),
                    s["address"].as_str().unwrap_or("?"),
                    s["udn"].as_str().unwrap_or("?"),
                );
            }
        }
        CastCommand::Play { speaker, volume } => {
            let mut body = serde_json::json!({"speaker": speaker});
            if let Some(v) = volume {
                body["volume"] = (*v).into();
            }
            let v = call("/radio/api/cast/play", Some(body))?;
            println!(
                "{} plays the radio from {}",
                v["speaker"].as_str().unwrap_or(speaker),
                v["url"].as_str().unwrap_or("?")
            );
        }
        CastCommand::Stop { speaker } => {
            let v = call(
                "/radio/api/cast/stop",
                Some(serde_json::json!({"speaker": speaker})),
            )?;
            println!("{} stopped", v["speaker"].as_str().unwrap_or(speaker));
        }
        CastCommand::Volume { speaker, volume } => {
            let v = call(
                "/radio/api/cast/volume",
                Some(serde_json::json!({"speaker": speaker, "volume": volume})),
            )?;
            println!(
                "{} at volume {volume}",
                v["speaker"].as_str().unwrap_or(speaker)
            );
        }
    }
    Ok(())
}

/// `moat radio tts say`: the configured voice (or `voice`) speaks `text` into the cache.
fn say(
    home: &Home,
    text: &str,
    voice: Option<&str>,
    out: Option<&std::path::Path>,
) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let mut tts = loaded.config.radio.tts.clone();
    if let Some(v) = voice {
        tts.voice = v.to_string();
        let mut radio = loaded.config.radio.clone();
        radio.tts = tts.clone();
        moat_core::config::radio::validate(&radio)
            .map_err(|(key, why)| Failure::usage(anyhow!("--voice: {key}: {why}")))?;
    }
    let key = if tts.engine == "http" && tts.api_key_secret.is_some() {
        let vault = app::vault::unlock(home)?;
        app::radio::speech_key(&vault, &tts).map_err(|why| Failure::usage(anyhow!(why)))?
    } else {
        None
    };
    let engine = app::radio::speech(&tts, key).map_err(|why| Failure::usage(anyhow!(why)))?;
    home.ensure().map_err(Failure::runtime)?;
    let cache = moat_radio::tts::SpeechCache::open(
        &app::radio::speech_cache_dir(home),
        tts.cache_max_clips,
        tts.cache_max_bytes,
    )
    .map_err(|e| Failure::runtime(anyhow::Error::new(e)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let started = std::time::Instant::now();
    let (clip, hit) = runtime
        .block_on(cache.speak(engine.as_ref(), text))
        .map_err(|e| match e {
            moat_radio::tts::TtsError::Text => Failure::usage(anyhow::Error::new(e)),
            e => Failure::runtime(anyhow::Error::new(e)),
        })?;
    let took = started.elapsed();
    let length = std::fs::read(&clip.path)
        .ok()
        .and_then(|b| moat_radio::tts::wav_duration(&b))
        .map_or_else(|| "?".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
    if let Some(out) = out {
        std::fs::copy(&clip.path, out)
            .map_err(|e| Failure::runtime(anyhow!("cannot write {}: {e}", out.display())))?;
    }
    println!(
        "{} ({length} of speech, voice {}, {} in {} ms): {}",
        if hit { "from the cache" } else { "spoken" },
        engine.voice_id(),
        if hit { "found" } else { "synthesised" },
        took.as_millis(),
        out.unwrap_or(&clip.path).display()
    );
    Ok(())
}

fn add(home: &Home, name: &str, lib: LibraryConfig, replace: bool) -> Result<(), Failure> {
    if !valid_library_name(name) {
        return Err(Failure::usage(anyhow!(
            "{name:?} is not a library name: use letters, digits, '-' and '_' (at most 64)"
        )));
    }
    let loaded = load_config(home, &[])?;
    if loaded.config.radio.libraries.contains_key(name) && !replace {
        return Err(Failure::usage(anyhow!(
            "a library named {name:?} exists; use --replace to overwrite it, or `moat radio library remove {name}`"
        )));
    }
    let mut radio = loaded.config.radio.clone();
    radio.libraries.insert(name.to_string(), lib.clone());
    if let Err((key, why)) = moat_core::config::radio::validate(&radio) {
        let hint = if key == "radio.library" {
            " (set `library = NAME` under [radio] in config.toml)"
        } else {
            ""
        };
        return Err(Failure::usage(anyhow!("{key}: {why}{hint}")));
    }
    let mut doc = read_doc(home)?;
    let libraries = table_at(&mut doc, &["radio", "libraries"])?;
    let mut entry = toml_edit::Table::new();
    entry.insert("url", toml_edit::value(lib.url.as_str()));
    entry.insert("user", toml_edit::value(lib.user.as_str()));
    entry.insert(
        "password_secret",
        toml_edit::value(lib.password_secret.as_str()),
    );
    libraries.insert(name, toml_edit::Item::Table(entry));
    write_doc(home, &doc)?;
    println!(
        "moat: library {name:?} added to {}; check it with `moat radio library test {name}`, then restart `moat serve`",
        home.config_file().display()
    );
    Ok(())
}

fn remove(home: &Home, name: &str) -> Result<(), Failure> {
    let mut doc = read_doc(home)?;
    let removed = doc
        .get_mut("radio")
        .and_then(|r| r.as_table_like_mut())
        .and_then(|r| r.get_mut("libraries"))
        .and_then(|l| l.as_table_like_mut())
        .and_then(|l| l.remove(name));
    if removed.is_none() {
        return Err(Failure::usage(anyhow!(
            "no library named {name:?} in {} (see `moat radio library list`)",
            home.config_file().display()
        )));
    }
    write_doc(home, &doc)?;
    println!(
        "moat: library {name:?} removed; restart `moat serve` for the station to stop playing it"
    );
    Ok(())
}

fn list(home: &Home) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let radio = &loaded.config.radio;
    if radio.libraries.is_empty() {
        println!(
            "no libraries; add one with `moat radio library add NAME --url URL --user USER --password-secret SECRET`"
        );
        return Ok(());
    }
    let playing = radio.station_library().map(|(n, _)| n.to_string());
    for (name, lib) in &radio.libraries {
        let mark = if playing.as_deref() == Some(name.as_str()) {
            "  (the station plays this one)"
        } else {
            ""
        };
        println!(
            "{name}  {}  user={}  password_secret={}{mark}",
            lib.url, lib.user, lib.password_secret
        );
    }
    Ok(())
}

fn test(home: &Home, name: &str) -> Result<(), Failure> {
    let loaded = load_config(home, &[])?;
    let Some(lib) = loaded.config.radio.libraries.get(name) else {
        return Err(Failure::usage(anyhow!(
            "no library named {name:?} (see `moat radio library list`)"
        )));
    };
    let vault = app::vault::unlock(home)?;
    let password =
        app::radio::password(&vault, name, lib).map_err(|why| Failure::usage(anyhow!(why)))?;
    let client =
        app::radio::client(name, lib, password).map_err(|why| Failure::usage(anyhow!(why)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::runtime)?;
    let result = runtime.block_on(async {
        let info = client.ping().await?;
        let sample = client.random_songs(5, None).await?;
        Ok::<_, moat_radio::SubsonicError>((info, sample))
    });
    let (info, sample) =
        result.map_err(|e| Failure::runtime(anyhow!("library {name:?} at {}: {e}", lib.url)))?;
    let auth = match info.auth {
        moat_radio::subsonic::AuthMode::Token => "token (md5 of password and a fresh salt)",
        moat_radio::subsonic::AuthMode::Hex => {
            "password, hex-encoded (the server's API is older than 1.13: use https beyond this machine)"
        }
    };
    println!(
        "ok: library {name:?} answers: Subsonic API {}{}; signs in by {auth}",
        info.version,
        info.server
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default()
    );
    if sample.is_empty() {
        println!("the library has no songs yet: the station will wait for some");
    }
    for s in sample {
        println!("  {} — {} ({})", s.title, s.artist, s.album);
    }
    Ok(())
}

fn open(home: &Home) -> Result<(), Failure> {
    let endpoint = crate::status::endpoint(home)?;
    let scheme = if endpoint.tls { "https" } else { "http" };
    println!(
        "{scheme}://{}/radio/#token={}",
        endpoint.addr, endpoint.token
    );
    Ok(())
}

fn now(home: &Home) -> Result<(), Failure> {
    let endpoint = crate::status::endpoint(home)?;
    if endpoint.tls {
        return Err(Failure::usage(anyhow!(
            "the main listener uses TLS, which `moat radio now` does not speak yet; use curl https://HOST:{}/radio/now",
            endpoint.addr.port()
        )));
    }
    let body = crate::status::get(endpoint.addr, "/radio/now", &endpoint.token)
        .map_err(|e| Failure::runtime(anyhow!("the radio: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| Failure::runtime(anyhow!("the server's answer is not JSON; is it moat?")))?;
    let line = |e: &serde_json::Value| {
        format!(
            "{} — {} ({})",
            e["title"].as_str().unwrap_or("?"),
            e["artist"].as_str().unwrap_or("?"),
            e["album"].as_str().unwrap_or("?")
        )
    };
    let state = v["state"].as_str().unwrap_or("?");
    match v["now"].is_object() {
        true => println!("{state}: {}", line(&v["now"])),
        false => println!("{state}: nothing on air"),
    }
    if let Some(problem) = v["problem"].as_str() {
        println!("problem: {problem}");
    }
    println!("listeners: {}", v["listeners"]);
    if let Some(next) = v["next"].as_array() {
        for e in next {
            println!("  next: {}", line(e));
        }
    }
    Ok(())
}
