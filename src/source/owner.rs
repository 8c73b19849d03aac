//! Who owns things: host name, current user, and cached uid/gid → name lookups.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// This machine's host name (empty if it cannot be determined).
pub fn hostname() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
    .clone()
}

/// The name of the user running vault (its uid in decimal when the name is unknown).
pub fn current_username() -> String {
    let uid = rustix::process::getuid().as_raw();
    let name = user_name(uid);
    if name.is_empty() {
        uid.to_string()
    } else {
        name
    }
}

fn cached(
    map: &'static OnceLock<Mutex<HashMap<u32, String>>>,
    id: u32,
    f: impl FnOnce() -> Option<String>,
) -> String {
    let m = map.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(n) = m.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return n.clone();
    }
    let name = f().unwrap_or_default();
    m.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, name.clone());
    name
}

/// The user name of `uid`, or empty.
pub fn user_name(uid: u32) -> String {
    static USERS: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    cached(&USERS, uid, || {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    })
}

/// The group name of `gid`, or empty.
pub fn group_name(gid: u32) -> String {
    static GROUPS: OnceLock<Mutex<HashMap<u32, String>>> = OnceLock::new();
    cached(&GROUPS, gid, || {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name)
    })
}
