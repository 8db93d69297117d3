//! `MOAT_HOME`: the one directory that holds everything a user owns.
//!
//! Nothing outside it is written. It is created with mode 0700; files in it are 0600.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable that overrides the home directory.
pub const HOME_ENV: &str = "MOAT_HOME";
/// Mode of the home directory and of every directory moat creates in it.
pub const DIR_MODE: u32 = 0o700;

/// Errors locating or creating the home directory.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Neither `MOAT_HOME` nor `HOME` is set.
    #[error(
        "cannot find a home directory: set MOAT_HOME (or HOME) to the directory moat should use"
    )]
    NoHome,
    /// `MOAT_HOME` is set but relative.
    #[error("MOAT_HOME must be an absolute path, got {0:?}")]
    Relative(PathBuf),
    /// Creating the directory failed.
    #[error("cannot create {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The path exists but is not a directory.
    #[error("{0} exists but is not a directory; point MOAT_HOME elsewhere or remove it")]
    NotADirectory(PathBuf),
}

/// The home directory and the layout inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Wraps an explicit directory (from a flag or a test).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Finds the home: `explicit` (a `--home` flag) > `MOAT_HOME` > `~/.moat`.
    pub fn locate(explicit: Option<&Path>) -> Result<Self, HomeError> {
        if let Some(p) = explicit {
            return Self::absolute(p.to_path_buf());
        }
        if let Some(p) = std::env::var_os(HOME_ENV).filter(|v| !v.is_empty()) {
            return Self::absolute(PathBuf::from(p));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(HomeError::NoHome)?;
        Self::absolute(PathBuf::from(home).join(".moat"))
    }

    fn absolute(p: PathBuf) -> Result<Self, HomeError> {
        if p.is_absolute() {
            Ok(Self { root: p })
        } else {
            Err(HomeError::Relative(p))
        }
    }

    /// Creates the directory with mode 0700 if it does not exist.
    ///
    /// An existing directory keeps its mode: tightening it silently could break a setup
    /// the user chose; `moat doctor` reports it instead.
    pub fn ensure(&self) -> Result<(), HomeError> {
        match fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => return Ok(()),
            Ok(_) => return Err(HomeError::NotADirectory(self.root.clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(HomeError::Create {
                    path: self.root.clone(),
                    source,
                });
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&self.root)
            .and_then(|()| fs::set_permissions(&self.root, fs::Permissions::from_mode(DIR_MODE)))
            .map_err(|source| HomeError::Create {
                path: self.root.clone(),
                source,
            })
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// `state.db`, the SQLite state store.
    pub fn state_db(&self) -> PathBuf {
        self.root.join("state.db")
    }
    /// `vault.moat`, the encrypted secret store.
    pub fn vault_file(&self) -> PathBuf {
        self.root.join("vault.moat")
    }
    /// `serve.json`: the running server's pid and address, for `moat status`.
    pub fn serve_info(&self) -> PathBuf {
        self.root.join("serve.json")
    }
    /// `control.token`, rewritten at every `moat serve` start.
    pub fn control_token(&self) -> PathBuf {
        self.root.join("control.token")
    }

    /// Entries under the home that anyone but the user running moat can reach: owned by
    /// another user, or with a mode that lets others in (directories must be 0700 and
    /// files 0600 at most). Symlinks are not followed.
    pub fn permission_problems(&self) -> io::Result<Vec<PermissionProblem>> {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        let mut problems = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(path) = stack.pop() {
            let meta = fs::symlink_metadata(&path)?;
            let mode = meta.permissions().mode() & 0o777;
            let want = if meta.is_dir() {
                DIR_MODE
            } else {
                crate::atomic::FILE_MODE
            };
            if !meta.is_dir() && !meta.is_file() {
                continue;
            }
            if meta.uid() != me {
                problems.push(PermissionProblem {
                    path: path.clone(),
                    mode,
                    want,
                    kind: ProblemKind::ForeignOwner {
                        owner: meta.uid(),
                        me,
                    },
                });
            } else if mode & 0o022 != 0 {
                problems.push(PermissionProblem {
                    path: path.clone(),
                    mode,
                    want,
                    kind: ProblemKind::Writable,
                });
            } else if mode & 0o077 != 0 {
                problems.push(PermissionProblem {
                    path: path.clone(),
                    mode,
                    want,
                    kind: ProblemKind::Readable,
                });
            }
            if meta.is_dir() {
                for entry in fs::read_dir(&path)? {
                    stack.push(entry?.path());
                }
            }
        }
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(problems)
    }
}

/// A file or directory that others than the user running moat can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionProblem {
    /// The entry.
    pub path: PathBuf,
    /// Its mode now (permission bits only).
    pub mode: u32,
    /// The mode it should have.
    pub want: u32,
    /// Who else can reach it, and how.
    pub kind: ProblemKind,
}

/// How others can reach an entry of the home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Others may read it (or list or enter it).
    Readable,
    /// Others may change it: a config pointing a backend at their own server, a vault or
    /// seal replaced. moat refuses to serve.
    Writable,
    /// Another user owns it, and so can change it and its mode. moat refuses to serve.
    ForeignOwner {
        /// The owner's uid.
        owner: u32,
        /// The uid moat runs as.
        me: u32,
    },
}

impl PermissionProblem {
    /// Whether someone else could change what moat reads: a reason not to start.
    pub fn is_unsafe(&self) -> bool {
        !matches!(self.kind, ProblemKind::Readable)
    }

    /// What is wrong, in a sentence.
    pub fn problem(&self) -> String {
        match self.kind {
            ProblemKind::ForeignOwner { owner, me } => format!(
                "{} belongs to uid {owner}, not to uid {me} that moat runs as",
                self.path.display()
            ),
            ProblemKind::Writable => format!(
                "{} has mode {:03o}: other users can change it",
                self.path.display(),
                self.mode
            ),
            ProblemKind::Readable => format!(
                "{} has mode {:03o}: other users can read it",
                self.path.display(),
                self.mode
            ),
        }
    }

    /// The command that fixes it.
    pub fn fix(&self) -> String {
        match self.kind {
            ProblemKind::ForeignOwner { me, .. } => format!(
                "chown {me} '{}' && chmod {:o} '{}' (or run moat as the user who owns MOAT_HOME)",
                self.path.display(),
                self.want,
                self.path.display()
            ),
            _ => format!("chmod {:o} '{}'", self.want, self.path.display()),
        }
    }
}

impl std::fmt::Display for PermissionProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; fix: {}", self.problem(), self.fix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_creates_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("a/b/.moat"));
        home.ensure().unwrap();
        let mode = fs::metadata(home.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        home.ensure().unwrap();
    }

    #[test]
    fn reports_loose_modes_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.ensure().unwrap();
        fs::write(home.config_file(), "").unwrap();
        fs::set_permissions(home.config_file(), fs::Permissions::from_mode(0o644)).unwrap();
        let problems = home.permission_problems().unwrap();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].to_string().contains("chmod 600"),
            "{}",
            problems[0]
        );
        assert!(!problems[0].is_unsafe(), "readable is a warning");
        fs::set_permissions(home.config_file(), fs::Permissions::from_mode(0o666)).unwrap();
        fs::set_permissions(home.root(), fs::Permissions::from_mode(0o777)).unwrap();
        let problems = home.permission_problems().unwrap();
        assert_eq!(problems.len(), 2);
        assert!(problems.iter().all(PermissionProblem::is_unsafe));
        assert!(
            problems[0].to_string().contains("chmod 700"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_home_owned_by_another_user_is_unsafe() {
        if rustix::process::geteuid().as_raw() != 0 {
            return; // only root can give a file away
        }
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().join("h"));
        home.ensure().unwrap();
        fs::write(home.config_file(), "").unwrap();
        fs::set_permissions(home.config_file(), fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(home.config_file(), Some(65534), Some(65534)).unwrap();
        let problems = home.permission_problems().unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].is_unsafe());
        assert!(
            problems[0].to_string().contains("belongs to uid 65534"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, "").unwrap();
        assert!(matches!(
            Home::at(&path).ensure(),
            Err(HomeError::NotADirectory(_))
        ));
    }

    #[test]
    fn relative_explicit_home_is_refused() {
        assert!(matches!(
            Home::locate(Some(Path::new("rel/dir"))),
            Err(HomeError::Relative(_))
        ));
    }
}
