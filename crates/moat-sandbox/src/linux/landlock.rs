//! Landlock, by its three system calls: the rule set is built in the child after the new
//! root is in place (its paths exist only there), where nothing may allocate, so the
//! `landlock` crate's allocating builder cannot be used. This module computes the access
//! masks for the kernel's ABI in the parent and applies them in the child.

use std::ffi::CString;

use super::sys;

/// `LANDLOCK_ACCESS_FS_*` bits.
pub mod fs {
    pub const EXECUTE: u64 = 1 << 0;
    pub const WRITE_FILE: u64 = 1 << 1;
    pub const READ_FILE: u64 = 1 << 2;
    pub const READ_DIR: u64 = 1 << 3;
    pub const REMOVE_DIR: u64 = 1 << 4;
    pub const REMOVE_FILE: u64 = 1 << 5;
    pub const MAKE_DIR: u64 = 1 << 7;
    pub const MAKE_REG: u64 = 1 << 8;
    pub const MAKE_SOCK: u64 = 1 << 9;
    pub const MAKE_FIFO: u64 = 1 << 10;
    pub const MAKE_SYM: u64 = 1 << 12;
    /// ABI 2.
    pub const REFER: u64 = 1 << 13;
    /// ABI 3.
    pub const TRUNCATE: u64 = 1 << 14;
    /// ABI 5.
    pub const IOCTL_DEV: u64 = 1 << 15;

    /// Reading and running what is there.
    pub const READ_EXEC: u64 = EXECUTE | READ_FILE | READ_DIR;
    /// Everything but creating device nodes.
    pub const READ_WRITE: u64 = READ_EXEC
        | WRITE_FILE
        | REMOVE_DIR
        | REMOVE_FILE
        | MAKE_DIR
        | MAKE_REG
        | MAKE_SOCK
        | MAKE_FIFO
        | MAKE_SYM
        | REFER
        | TRUNCATE;
}

/// Every filesystem right each ABI knows, so all of them are "handled" (denied unless a
/// rule allows them).
fn handled_fs(abi: u32) -> u64 {
    let mut all = (1 << 13) - 1;
    if abi >= 2 {
        all |= fs::REFER;
    }
    if abi >= 3 {
        all |= fs::TRUNCATE;
    }
    if abi >= 5 {
        all |= fs::IOCTL_DEV;
    }
    all
}

/// `LANDLOCK_ACCESS_NET_BIND_TCP | LANDLOCK_ACCESS_NET_CONNECT_TCP` (ABI 4): handled, so
/// no TCP at all even if a network namespace were shared, but for the ports allowed.
const NET_ALL_TCP: u64 = 0b11;
/// `LANDLOCK_ACCESS_NET_CONNECT_TCP`.
const NET_CONNECT_TCP: u64 = 0b10;
/// `LANDLOCK_RULE_NET_PORT`.
const RULE_NET_PORT: usize = 2;

/// `struct landlock_net_port_attr`.
#[repr(C)]
pub struct NetPort {
    allowed_access: u64,
    port: u64,
}
/// `LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL` (ABI 6): no connecting
/// to abstract sockets or signalling processes outside the sandbox.
const SCOPE_ALL: u64 = 0b11;

/// `struct landlock_ruleset_attr`.
#[repr(C)]
pub struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the UAPI header).
#[repr(C, packed)]
pub struct PathBeneath {
    allowed_access: u64,
    parent_fd: i32,
}

/// `LANDLOCK_RULE_PATH_BENEATH`.
const RULE_PATH_BENEATH: usize = 1;

/// The kernel's Landlock ABI version, or `None` when Landlock is off or absent.
pub fn abi() -> Option<u32> {
    // LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
    let v = sys::raw(sys::SYS_LANDLOCK_CREATE_RULESET, 0, 0, 1, 0, 0);
    (v > 0).then_some(v as u32)
}

/// A rule set ready to apply in the child: the attribute for the ABI and one rule per
/// directory.
pub struct Plan {
    /// The ABI the masks were computed for.
    pub abi: u32,
    attr: RulesetAttr,
    attr_size: usize,
    rules: Vec<(CString, u64)>,
    /// TCP ports that may be connected to (ABI 4+; below it, the network namespace alone
    /// confines).
    connect: Vec<NetPort>,
}

impl Plan {
    /// A plan for `abi` that allows `rules` (path inside the sandbox, rights), TCP
    /// connections to `connect_ports`, and nothing else.
    pub fn new(abi: u32, rules: Vec<(CString, u64)>, connect_ports: Vec<u16>) -> Plan {
        let handled = handled_fs(abi);
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: if abi >= 4 { NET_ALL_TCP } else { 0 },
            scoped: if abi >= 6 { SCOPE_ALL } else { 0 },
        };
        // Older kernels reject a struct larger than the one they know unless the extra
        // fields are zero; pass exactly the fields this ABI has.
        let attr_size = match abi {
            1..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        let rules = rules
            .into_iter()
            .map(|(path, access)| (path, access & handled))
            .collect();
        let connect = if abi >= 4 {
            connect_ports
                .into_iter()
                .map(|port| NetPort {
                    allowed_access: NET_CONNECT_TCP,
                    port: u64::from(port),
                })
                .collect()
        } else {
            Vec::new()
        };
        Plan {
            abi,
            attr,
            attr_size,
            rules,
            connect,
        }
    }

    /// Builds the rule set and restricts the calling process (child side: raw calls
    /// only). `no_new_privs` must already be set. Returns the errno of the failing step.
    pub fn apply(&self) -> Result<(), i32> {
        let ruleset = sys::raw(
            sys::SYS_LANDLOCK_CREATE_RULESET,
            &self.attr as *const RulesetAttr as usize,
            self.attr_size,
            0,
            0,
            0,
        );
        if ruleset < 0 {
            return Err(sys::errno());
        }
        for (path, access) in &self.rules {
            let fd = sys::raw(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                path.as_ptr() as usize,
                (libc::O_PATH | libc::O_CLOEXEC) as usize,
                0,
                0,
            );
            if fd < 0 {
                return Err(sys::errno());
            }
            let rule = PathBeneath {
                allowed_access: *access,
                parent_fd: fd as i32,
            };
            let added = sys::raw(
                sys::SYS_LANDLOCK_ADD_RULE,
                ruleset as usize,
                RULE_PATH_BENEATH,
                &rule as *const PathBeneath as usize,
                0,
                0,
            );
            let err = sys::errno();
            sys::raw(libc::SYS_close, fd as usize, 0, 0, 0, 0);
            if added < 0 {
                return Err(err);
            }
        }
        for port in &self.connect {
            let added = sys::raw(
                sys::SYS_LANDLOCK_ADD_RULE,
                ruleset as usize,
                RULE_NET_PORT,
                port as *const NetPort as usize,
                0,
                0,
            );
            if added < 0 {
                let err = sys::errno();
                sys::raw(libc::SYS_close, ruleset as usize, 0, 0, 0, 0);
                return Err(err);
            }
        }
        let restricted = sys::raw(
            sys::SYS_LANDLOCK_RESTRICT_SELF,
            ruleset as usize,
            0,
            0,
            0,
            0,
        );
        let err = sys::errno();
        sys::raw(libc::SYS_close, ruleset as usize, 0, 0, 0, 0);
        if restricted < 0 {
            return Err(err);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_the_abi() {
        assert_eq!(handled_fs(1), 0x1fff);
        assert_eq!(handled_fs(2) & fs::REFER, fs::REFER);
        assert_eq!(handled_fs(2) & fs::TRUNCATE, 0);
        assert_eq!(handled_fs(5) & fs::IOCTL_DEV, fs::IOCTL_DEV);
        let p = Plan::new(
            1,
            vec![(CString::new("/tmp").unwrap(), fs::READ_WRITE)],
            vec![3128],
        );
        assert!(p.connect.is_empty(), "no network rules before ABI 4");
        assert_eq!(p.rules[0].1 & (fs::REFER | fs::TRUNCATE), 0);
        assert_eq!(p.attr_size, 8);
        let p = Plan::new(7, Vec::new(), vec![3128]);
        assert_eq!(p.connect.len(), 1);
        assert_eq!(p.attr_size, 24);
        assert_eq!({ p.attr.scoped }, SCOPE_ALL);
    }
}
