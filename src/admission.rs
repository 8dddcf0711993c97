//! Admission control shared by the workers: open sockets and new connections per client IP,
//! and connections per user. One mutex, taken only at accept, upgrade and close (never per
//! message).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};

use crate::config::{LimitsConfig, PerUser};

/// Length of the new-connections-per-IP window.
const RATE_WINDOW_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct IpState {
    open: u32,
    window_start_ms: u64,
    new_in_window: u32,
}

/// A connection of a user, wherever it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserConn {
    /// Worker that owns it.
    pub worker: usize,
    /// Connection id.
    pub conn: u64,
}

#[derive(Debug, Default)]
struct Inner {
    ips: HashMap<IpAddr, IpState>,
    users: HashMap<String, Vec<UserConn>>,
}

/// Why a connection is refused at the door (HTTP 429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The shared registry.
#[derive(Debug, Default)]
pub struct Admission {
    inner: Mutex<Inner>,
}

impl Admission {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a new socket from `ip` (always: [`Admission::socket_closed`] balances it) and
    /// says whether it is over a per-IP limit.
    pub fn socket_opened(
        &self,
        ip: IpAddr,
        now_ms: u64,
        limits: &LimitsConfig,
    ) -> Result<(), Refusal> {
        let mut inner = self.lock();
        let st = inner.ips.entry(ip).or_default();
        st.open += 1;
        if now_ms.saturating_sub(st.window_start_ms) >= RATE_WINDOW_MS {
            st.window_start_ms = now_ms;
            st.new_in_window = 0;
        }
        st.new_in_window += 1;
        let (max_open, max_new) = (
            limits.max_connections_per_ip,
            limits.new_connections_per_ip_per_min,
        );
        if max_open > 0 && st.open > max_open {
            return Err(Refusal(format!(
                "more than {max_open} connections from {ip}"
            )));
        }
        if max_new > 0 && st.new_in_window > max_new {
            return Err(Refusal(format!(
                "more than {max_new} new connections per minute from {ip}"
            )));
        }
        Ok(())
    }

    /// Uncounts a socket from `ip`.
    pub fn socket_closed(&self, ip: IpAddr) {
        let mut inner = self.lock();
        if let Some(st) = inner.ips.get_mut(&ip) {
            st.open = st.open.saturating_sub(1);
            if st.open == 0 && st.new_in_window == 0 {
                inner.ips.remove(&ip);
            }
        }
    }

    /// Forgets per-IP windows that have ended (called from housekeeping, so the map does not
    /// keep every IP ever seen).
    pub fn expire_windows(&self, now_ms: u64) {
        let mut inner = self.lock();
        inner.ips.retain(|_, st| {
            if now_ms.saturating_sub(st.window_start_ms) >= RATE_WINDOW_MS {
                st.new_in_window = 0;
            }
            st.open > 0 || st.new_in_window > 0
        });
    }

    /// Registers connection `me` of `user` under `policy`. Returns the older connections to
    /// close with 4002 (for `replace`); the caller closes them after this returns, outside the
    /// lock. A refusal leaves nothing registered.
    pub fn register_user(
        &self,
        user: &str,
        me: UserConn,
        policy: PerUser,
    ) -> Result<Vec<UserConn>, Refusal> {
        let mut inner = self.lock();
        let conns = inner.users.entry(user.to_string()).or_default();
        let replaced = match policy {
            PerUser::Unlimited => Vec::new(),
            PerUser::Replace => std::mem::take(conns),
            PerUser::Reject if !conns.is_empty() => {
                return Err(Refusal(format!("user {user} already has a connection")));
            }
            PerUser::Reject => Vec::new(),
            PerUser::Max(n) if conns.len() >= n as usize => {
                return Err(Refusal(format!("user {user} already has {n} connections")));
            }
            PerUser::Max(_) => Vec::new(),
        };
        conns.push(me);
        Ok(replaced)
    }

    /// Forgets connection `me` of `user`.
    pub fn unregister_user(&self, user: &str, me: UserConn) {
        let mut inner = self.lock();
        if let Some(conns) = inner.users.get_mut(user) {
            conns.retain(|c| *c != me);
            if conns.is_empty() {
                inner.users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(open: u32, new: u32) -> LimitsConfig {
        LimitsConfig {
            max_connections_per_ip: open,
            new_connections_per_ip_per_min: new,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn per_ip_limits_and_windows() {
        let a = Admission::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let l = limits(2, 3);
        assert!(a.socket_opened(ip, 0, &l).is_ok());
        assert!(a.socket_opened(ip, 0, &l).is_ok());
        assert!(a.socket_opened(ip, 0, &l).is_err()); // 3 open
        a.socket_closed(ip); // the refused one goes away
        a.socket_closed(ip); // and one of the others: 1 open
        assert!(a.socket_opened(ip, 1, &l).is_err()); // 4th new in the window
        a.socket_closed(ip);
        assert!(a.socket_opened(ip, 60_001, &l).is_ok()); // new window: 2 open, 1 new
        a.socket_closed(ip);
        a.socket_closed(ip);
        a.expire_windows(200_000);
        assert!(a.lock().ips.is_empty());
    }

    #[test]
    fn per_user_policies() {
        let a = Admission::default();
        let c = |n| UserConn { worker: 0, conn: n };
        assert_eq!(a.register_user("u", c(1), PerUser::Replace), Ok(vec![]));
        assert_eq!(a.register_user("u", c(2), PerUser::Replace), Ok(vec![c(1)]));
        assert!(a.register_user("u", c(3), PerUser::Reject).is_err());
        a.unregister_user("u", c(2));
        assert_eq!(a.register_user("u", c(4), PerUser::Reject), Ok(vec![]));
        assert_eq!(a.register_user("v", c(5), PerUser::Max(2)), Ok(vec![]));
        assert_eq!(a.register_user("v", c(6), PerUser::Max(2)), Ok(vec![]));
        assert!(a.register_user("v", c(7), PerUser::Max(2)).is_err());
    }
}
