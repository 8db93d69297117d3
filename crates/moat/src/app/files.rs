//! Files moat writes for others to read (man pages, the systemd unit): whole or not at
//! all, and readable by everyone, unlike MOAT_HOME's (which `moat_core::atomic` makes 0600).

use std::path::Path;

use anyhow::Context;

use crate::Failure;

/// Writes `text` to `path` aside, makes it 0644, then renames it into place; on failure
/// nothing is left behind and the old file, if any, stays.
pub(crate) fn write_public(path: &Path, text: &[u8]) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    let aside = std::path::PathBuf::from(aside);
    let result = std::fs::write(&aside, text)
        .and_then(|()| std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o644)))
        .and_then(|()| std::fs::rename(&aside, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    result
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(Failure::runtime)
}
