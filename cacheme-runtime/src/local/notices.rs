//! The announcements local tiers exchange across processes: who sent it
//! and which keys of a store changed (never values), and the bookkeeping
//! of which stores this process is hearing.
//!
//! An announcement is `"{sender:x}"` followed by each key after a space
//! (store keys hold no whitespace); the sender alone means every key of
//! the store (`invalidate_all`). A process ignores its own.

use std::collections::HashSet;
use std::sync::Mutex;

/// The most keys in one announcement; a batch is announced in several.
pub(crate) const KEYS_PER_ANNOUNCEMENT: usize = 500;

/// The announcements of `keys` changed by `sender` (one for every
/// [`KEYS_PER_ANNOUNCEMENT`] keys; one for the whole store when `keys` is
/// empty).
pub(crate) fn announcements(sender: u64, keys: &[&str]) -> Vec<String> {
    if keys.is_empty() {
        return vec![format!("{sender:x}")];
    }
    keys.chunks(KEYS_PER_ANNOUNCEMENT)
        .map(|chunk| {
            let mut payload = format!("{sender:x}");
            for key in chunk {
                payload.push(' ');
                payload.push_str(key);
            }
            payload
        })
        .collect()
}

/// An announcement's sender and keys (empty: every key of the store);
/// `None` for a payload that is not an announcement.
pub(crate) fn parse(payload: &[u8]) -> Option<(u64, Vec<&str>)> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut words = text.split(' ');
    let sender = u64::from_str_radix(words.next()?, 16).ok()?;
    Some((sender, words.filter(|key| !key.is_empty()).collect()))
}

/// Which stores' announcements are not heard yet: all of them at first and
/// after a lost connection, until each one's subscription is confirmed.
#[derive(Debug)]
pub(crate) struct Hearing {
    stores: Vec<&'static str>,
    deaf: Mutex<HashSet<&'static str>>,
}

impl Hearing {
    /// Not hearing any of `stores` yet.
    pub(crate) fn new(stores: Vec<&'static str>) -> Self {
        let deaf = Mutex::new(stores.iter().copied().collect());
        Hearing { stores, deaf }
    }

    /// The stores to hear.
    pub(crate) fn stores(&self) -> &[&'static str] {
        &self.stores
    }

    /// `store` is heard; `true` when every store now is.
    pub(crate) fn heard(&self, store: &str) -> bool {
        let mut deaf = self.deaf.lock().unwrap_or_else(|p| p.into_inner());
        deaf.remove(store);
        deaf.is_empty()
    }

    /// The connection was lost: no store is heard.
    pub(crate) fn lost(&self) {
        let mut deaf = self.deaf.lock().unwrap_or_else(|p| p.into_inner());
        deaf.extend(self.stores.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_split() {
        let keys: Vec<String> = (0..1_001).map(|n| format!("book:{n}:v1")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let sent = announcements(0xabc, &keys);
        assert_eq!(sent.len(), 3);
        let heard: Vec<&str> = sent
            .iter()
            .flat_map(|payload| {
                let (sender, keys) = parse(payload.as_bytes()).unwrap();
                assert_eq!(sender, 0xabc);
                keys
            })
            .collect();
        assert_eq!(heard, keys);
        assert_eq!(parse(announcements(7, &[])[0].as_bytes()), Some((7, vec![])));
        assert_eq!(parse(b"filled"), None, "a stampede notice is not an announcement");
    }

    #[test]
    fn every_store_must_be_heard_again_after_a_loss() {
        let hearing = Hearing::new(vec!["A", "B"]);
        assert!(!hearing.heard("A"));
        assert!(hearing.heard("B"));
        hearing.lost();
        assert!(!hearing.heard("B"));
        assert!(hearing.heard("A"));
    }
}
