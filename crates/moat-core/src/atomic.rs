//! Crash-safe file replacement, and reading back only what a file of moat's can be.
//!
//! Every file moat rewrites goes through [`write_atomic`]: the new contents go to a
//! temporary file in the same directory, are fsync'd, renamed over the target, and then the
//! directory itself is fsync'd so the rename survives a power cut. A reader, or a process
//! that crashes at any instant, sees either the complete old file or the complete new one,
//! never a mix and never an empty file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Opens `path` for reading if it is a regular file. A FIFO, a device (`/dev/zero`) or a
/// folder in a file's place is refused without waiting on it: it is opened non-blocking
/// (and never as a controlling terminal) and checked before a byte is read.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a device, pipe or folder is in its place)",
        ));
    }
    Ok(file)
}

/// Reads `path` whole if it is a regular file ([`open_regular`]) of at most `max` bytes:
/// a larger one is refused rather than read into memory.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let meta = file.metadata()?;
    let too_large = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {max} bytes such a file can be"),
        )
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_large());
    }
    Ok(out)
}

/// Mode of every file moat writes: readable and writable by the owner only.
pub const FILE_MODE: u32 = 0o600;

/// A failed atomic write. The target file is unchanged.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct AtomicWriteError {
    /// The file that was to be replaced.
    pub path: PathBuf,
    /// What the operating system said.
    #[source]
    pub source: io::Error,
}

/// Replaces `path` with `contents` atomically, with mode 0600.
///
/// The directory containing `path` must exist. On error the previous file, if any, is
/// left as it was and the temporary file is removed.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AtomicWriteError> {
    write_atomic_inner(path, contents).map_err(|source| AtomicWriteError {
        path: path.to_path_buf(),
        source,
    })
}

fn write_atomic_inner(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");

    // tempfile creates the file with O_EXCL and mode 0600, and removes it if we bail out.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Creates `path` as an empty 0600 file if it does not exist yet; never truncates.
///
/// For files that other libraries open by path (SQLite), so they inherit the mode.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    create_private_file_inner(path)
}

/// Creates `path` with mode 0600 when it does not exist, and leaves an existing file
/// alone without opening it. For a file that a database in this process may hold locks
/// on (SQLite's): POSIX record locks are per process, and closing *any* descriptor of a
/// file drops all of them, so even opening and closing it once would let another process
/// believe this one gone (and, for SQLite in WAL mode, delete the WAL under it).
pub fn create_private_file_if_missing(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn create_private_file_inner(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
        .map(drop)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_bounded_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"hello");
        assert!(read_regular(&file, 4).is_err());
        assert!(read_regular(dir.path(), 1 << 20).is_err());
        assert!(read_regular(Path::new("/dev/zero"), 1 << 20).is_err());
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read_regular(&fifo, 1 << 20).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_regular(&link, 1 << 20).is_err());
    }

    #[test]
    fn replaces_contents_with_mode_0600_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.toml");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        write_atomic(&path, b"new contents").unwrap();

        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.toml")]);
    }

    #[test]
    fn failure_names_the_path_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("file");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    #[test]
    fn create_private_file_does_not_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        create_private_file(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&path, b"data").unwrap();
        create_private_file(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"data");
        create_private_file_if_missing(&path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"data");
        let fresh = dir.path().join("fresh");
        create_private_file_if_missing(&fresh).unwrap();
        assert_eq!(
            fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
