//! `moat vault ...`: the command-line face of moat-vault. Passwords come from a prompt
//! without echo, from `MOAT_VAULT_PASSWORD_FILE`, or (only with an explicit opt-in) from
//! `MOAT_VAULT_PASSWORD`. Values never reach the terminal except through `get --reveal`.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use moat_core::home::Home;
use moat_vault::seal::{SealPaths, SealStore};
use moat_vault::{KdfParams, Vault, VaultError, VaultEvent};
use zeroize::Zeroizing;

use crate::app::progress::with_progress;
use crate::app::prompt::{new_password, new_pin, replacement_password};
use crate::app::vault::{RESERVED, audited, credential, emit, transact, write_new};
use crate::cli::VaultCommand;
use crate::{Failure, app};

pub(crate) fn run(home: &Home, command: &VaultCommand) -> Result<(), Failure> {
    match command {
        VaultCommand::Init => init(home),
        VaultCommand::Status => status(home),
        VaultCommand::List => list(home),
        VaultCommand::Add {
            name,
            stdin,
            description,
            scope,
        } => add(home, name, *stdin, description, scope),
        VaultCommand::Remove { name } => remove(home, name),
        VaultCommand::Rename { old, new } => rename(home, old, new),
        VaultCommand::Get {
            name,
            reveal,
            force,
        } => get(home, name, *reveal, *force),
        VaultCommand::Passwd => passwd(home),
        VaultCommand::Seal { pin, store } => seal(home, *pin, store.as_deref()),
        VaultCommand::Export { out } => export(home, out),
        VaultCommand::Unseal => unseal(home),
    }
}

fn init(home: &Home) -> Result<(), Failure> {
    let path = home.vault_file();
    home.ensure().map_err(Failure::runtime)?;
    if path.exists() {
        return Err(Failure::usage(anyhow!(
            "a vault already exists at {}",
            path.display()
        )));
    }
    let password = new_password()?;
    audited(home, VaultEvent::Init, || {
        with_progress("creating the vault", || {
            Vault::create(&path, &password, KdfParams::default())
        })
        .map_err(app::vault::failure)?;
        // A seal left from an earlier vault holds another data key: it must go.
        if let Ok(paths) = SealPaths::for_home(home.root()) {
            let _ = paths.remove();
        }
        Ok(())
    })?;
    println!(
        "created {} (AES-256-GCM, Argon2id m=64MiB t=3 p=1)",
        path.display()
    );
    Ok(())
}

fn status(home: &Home) -> Result<(), Failure> {
    let path = home.vault_file();
    describe_file(&path)?;
    let paths = SealPaths::for_home(home.root()).ok();
    let outside = paths.as_ref().and_then(|p| p.outside());
    match paths.as_ref().and_then(|p| p.status()) {
        Some(true) => println!("sealed to this machine and path, with a PIN"),
        Some(false) => {
            println!("sealed to this machine and path: unlocks without a password here")
        }
        None => println!(
            "not sealed: every unlock needs the password (`moat vault seal` to change that)"
        ),
    }
    if let Some(outside) = outside {
        println!("the seal's other half is {outside}");
    }
    Ok(())
}

fn list(home: &Home) -> Result<(), Failure> {
    let vault = app::vault::unlock(home)?;
    let (own, yours): (Vec<_>, Vec<_>) = vault
        .entries()
        .partition(|e| e.name().starts_with(RESERVED));
    if yours.is_empty() {
        println!("the vault is empty; add a secret with `moat vault add NAME`");
    }
    for e in yours {
        let updated = std::time::UNIX_EPOCH + Duration::from_secs(e.updated());
        let mut line = format!(
            "{}  updated {}",
            e.name(),
            humantime::format_rfc3339_seconds(updated)
        );
        // Free text someone typed, or pasted: shown, never interpreted.
        if let Some(s) = e.scope() {
            line.push_str(&format!("  scope {}", crate::terminal::shown(s, false)));
        }
        if let Some(d) = e.description() {
            line.push_str(&format!("  {}", crate::terminal::shown(d, false)));
        }
        println!("{}", moat_core::redact::global().redact(&line));
    }
    if !own.is_empty() {
        let names: Vec<&str> = own.iter().map(|e| e.name()).collect();
        println!("(and moat's own: {})", names.join(", "));
    }
    Ok(())
}

fn add(
    home: &Home,
    name: &str,
    stdin: bool,
    description: &Option<String>,
    scope: &Option<String>,
) -> Result<(), Failure> {
    let path = home.vault_file();
    // Before the value is asked for.
    moat_vault::check_new_name(name).map_err(app::vault::failure)?;
    if name.starts_with(RESERVED) {
        return Err(Failure::usage(anyhow!(
            "names starting with {RESERVED:?} are moat's own (the audit key and checkpoint); choose another name"
        )));
    }
    // A fresh home gets the sealed vault `moat serve` would make, not a prompt.
    app::vault::ensure(home)?;
    let credential = credential(home, "vault password")?;
    let value = read_value(stdin)?;
    let event = VaultEvent::Add {
        name: name.to_string(),
    };
    audited(home, event, || {
        transact(home, &path, &credential, |v| {
            v.add(name, value.to_vec(), description.clone(), scope.clone())
        })
    })?;
    println!("added {name}");
    Ok(())
}

fn remove(home: &Home, name: &str) -> Result<(), Failure> {
    let path = home.vault_file();
    let credential = credential(home, "vault password")?;
    let event = VaultEvent::Remove {
        name: name.to_string(),
    };
    audited(home, event, || {
        transact(home, &path, &credential, |v| v.remove(name))
    })?;
    println!("removed {name}");
    Ok(())
}

fn rename(home: &Home, old: &str, new: &str) -> Result<(), Failure> {
    let path = home.vault_file();
    moat_vault::check_new_name(new).map_err(app::vault::failure)?;
    if let Some(reserved) = [old, new].into_iter().find(|n| n.starts_with(RESERVED)) {
        return Err(Failure::usage(anyhow!(
            "{reserved:?} is one of moat's own names (the audit key and checkpoint): entries under {RESERVED:?} are neither renamed nor made by renaming"
        )));
    }
    let credential = credential(home, "vault password")?;
    let event = VaultEvent::Rename {
        from: old.to_string(),
        to: new.to_string(),
    };
    audited(home, event, || {
        transact(home, &path, &credential, |v| v.rename(old, new))
    })?;
    println!("renamed {old} to {new}");
    Ok(())
}

fn get(home: &Home, name: &str, reveal: bool, force: bool) -> Result<(), Failure> {
    if !reveal {
        return Err(Failure::usage(anyhow!(
            "`moat vault get` prints a secret value: add --reveal to confirm"
        )));
    }
    if !std::io::stdout().is_terminal() && !force {
        return Err(Failure::usage(anyhow!(
            "refusing to write a secret to a pipe or file; add --force if that is what you want"
        )));
    }
    let vault = app::vault::unlock(home)?;
    let entry = vault
        .get(name)
        .ok_or_else(|| app::vault::failure(VaultError::NoEntry(name.to_string())))?;
    emit(
        home,
        VaultEvent::Reveal {
            name: name.to_string(),
        },
    );
    let mut out = std::io::stdout().lock();
    out.write_all(entry.value())
        .and_then(|()| out.write_all(b"\n"))
        .map_err(Failure::runtime)?;
    Ok(())
}

fn passwd(home: &Home) -> Result<(), Failure> {
    let path = home.vault_file();
    app::vault::ensure(home)?;
    let old = credential(home, "current vault password")?;
    let new = replacement_password()?;
    audited(home, VaultEvent::PasswordChanged, || {
        transact(home, &path, &old, |v| {
            v.change_password(&new, KdfParams::default())
        })
    })?;
    println!("password changed; the data key was rewrapped, entries were not re-encrypted");
    Ok(())
}

fn seal(home: &Home, pin: bool, store: Option<&str>) -> Result<(), Failure> {
    let path = home.vault_file();
    let store = match store {
        Some(s) => s.parse::<SealStore>(),
        None => SealStore::from_env(),
    }
    .map_err(|e| Failure::usage(e.into()))?;
    let vault = app::vault::unlock_or_create(home)?;
    let paths = SealPaths::for_home(home.root()).map_err(Failure::runtime)?;
    let pin = if pin { Some(new_pin()?) } else { None };
    let event = VaultEvent::Seal { pin: pin.is_some() };
    let sealed = audited(home, event, || {
        with_progress("sealing", || {
            paths.seal(&vault, pin.as_deref().map(|p| p.as_slice()), store)
        })
        .map_err(Failure::runtime)
    })?;
    if let Some(why) = &sealed.keyring_skipped {
        tracing::info!("seal: not using the OS keyring: {why}");
    }
    if let Some((old, why)) = &sealed.leftover {
        eprintln!(
            "moat: warning: the previous seal's secret, {old}, could not be deleted ({why}); delete it with your keyring's own tool"
        );
    }
    if !moat_vault::seal::machine_bound() {
        eprintln!(
            "moat: warning: this system has no machine id; the seal is bound to the outside secret and the path only"
        );
    }
    println!(
        "sealed: moat now unlocks {} without the password, on this machine and at this path only{}.",
        path.display(),
        if pin.is_some() { ", given the PIN" } else { "" }
    );
    println!(
        "The other half of the seal is {}. Anyone who can read your files here can unseal too; `moat vault unseal` undoes it.",
        sealed.outside
    );
    Ok(())
}

fn export(home: &Home, out: &Path) -> Result<(), Failure> {
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    if out.exists() {
        return Err(Failure::usage(anyhow!(
            "{} exists; moat exports only to a new file",
            out.display()
        )));
    }
    let vault = app::vault::unlock(home)?;
    let entries: Vec<serde_json::Value> = vault
        .entries()
        .map(|e| {
            let mut v = serde_json::json!({
                "name": e.name(),
                "created": e.created(),
                "updated": e.updated(),
                "description": e.description(),
                "scope": e.scope(),
            });
            match std::str::from_utf8(e.value()) {
                Ok(text) => v["value"] = text.into(),
                Err(_) => v["value_hex"] = hex::encode(e.value()).into(),
            }
            v
        })
        .collect();
    let text = Zeroizing::new(
        serde_json::to_string_pretty(
            &serde_json::json!({ "moat_vault_export": 1, "entries": entries }),
        )
        .map_err(Failure::runtime)?,
    );
    write_new(&out, text.as_bytes())?;
    emit(home, VaultEvent::Reveal { name: "*".into() });
    println!(
        "exported {} secrets to {} (0600). It holds them in clear: move it somewhere safe or delete it.",
        vault.entries().count(),
        out.display()
    );
    Ok(())
}

fn unseal(home: &Home) -> Result<(), Failure> {
    let path = home.vault_file();
    let paths = SealPaths::for_home(home.root()).map_err(Failure::runtime)?;
    if paths.status().is_some() && path.exists() {
        let vault = app::vault::unlock(home)?;
        if !vault.password_known() {
            return Err(Failure::usage(anyhow!(
                "this vault has no master password anyone knows (moat serve created it sealed); \
                     set one with `moat vault passwd` first, or unsealing would lock you out for good"
            )));
        }
    }
    if paths.status().is_none() {
        println!("the vault was not sealed");
    } else if audited(home, VaultEvent::Unseal, || {
        paths.remove().map_err(Failure::runtime)
    })? {
        println!("unsealed: the vault needs its password again");
    } else {
        println!("the vault was not sealed");
    }
    Ok(())
}

/// What `vault status` says of the file itself: its size, format and KDF parameters.
fn describe_file(path: &Path) -> Result<(), Failure> {
    match std::fs::read(path) {
        Err(_) => println!(
            "no vault at {}; create one with `moat vault init`",
            path.display()
        ),
        Ok(bytes) => match moat_vault::format::parse_header(&bytes) {
            Ok(h) => println!(
                "vault {} ({} bytes), format v{}, Argon2id m={}KiB t={} p={}",
                path.display(),
                bytes.len(),
                moat_vault::format::VERSION,
                h.kdf.m_kib,
                h.kdf.t,
                h.kdf.p
            ),
            Err(e) => return Err(app::vault::failure(e)),
        },
    }
    Ok(())
}

/// The value to store: typed without echo, or all of stdin with `--stdin`.
fn read_value(from_stdin: bool) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut value = Zeroizing::new(Vec::new());
    if from_stdin {
        // One byte past the most a vault holds is enough to refuse: a value piped from
        // the wrong file (or /dev/zero) is not read whole.
        std::io::stdin()
            .take(moat_vault::MAX_VALUE_BYTES as u64 + 3)
            .read_to_end(&mut value)
            .map_err(Failure::runtime)?;
        if value.ends_with(b"\n") {
            value.pop();
            if value.ends_with(b"\r") {
                value.pop();
            }
        }
    } else if std::io::stdin().is_terminal() {
        let typed =
            Zeroizing::new(rpassword::prompt_password("secret value: ").map_err(Failure::runtime)?);
        value.extend_from_slice(typed.as_bytes());
    } else {
        return Err(Failure::usage(anyhow!(
            "no terminal to type the value: pipe it in with --stdin"
        )));
    }
    if value.is_empty() {
        return Err(Failure::usage(anyhow!(
            "the secret value is empty; nothing was stored"
        )));
    }
    Ok(value)
}
