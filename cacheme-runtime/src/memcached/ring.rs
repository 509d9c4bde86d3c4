//! Consistent hashing: which server holds a key.
//!
//! Each server is placed at 160 points of a 32-bit ring (taken from SHA-256
//! digests of `host:port-n`, the way ketama places them); a key belongs to
//! the first point at or after the hash of the key. Adding or removing one
//! of N servers moves about 1/N of the keys, not all of them. The layout
//! depends only on the server addresses as configured, so every process
//! configured with the same list agrees.

use sha2::{Digest, Sha256};

/// Points per server.
const POINTS: usize = 160;

/// The ring of a fixed list of servers.
#[derive(Debug)]
pub(crate) struct Ring {
    /// (point, server index), sorted by point.
    points: Vec<(u32, usize)>,
    servers: usize,
}

impl Ring {
    /// A ring over `servers` (by address), which must not be empty.
    pub(crate) fn new(servers: &[String]) -> Self {
        let mut points = Vec::with_capacity(servers.len() * POINTS);
        for (index, addr) in servers.iter().enumerate() {
            for round in 0..POINTS / 8 {
                let digest = Sha256::digest(format!("{addr}-{round}").as_bytes());
                for word in digest.chunks_exact(4) {
                    points.push((u32::from_be_bytes([word[0], word[1], word[2], word[3]]), index));
                }
            }
        }
        points.sort_unstable();
        Ring {
            points,
            servers: servers.len(),
        }
    }

    /// The index of the server holding `key`.
    pub(crate) fn server_for(&self, key: &str) -> usize {
        if self.servers <= 1 {
            return 0;
        }
        let digest = Sha256::digest(key.as_bytes());
        let hash = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        let at = self.points.partition_point(|&(point, _)| point < hash);
        self.points
            .get(at)
            .or(self.points.first())
            .map_or(0, |&(_, server)| server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:11211")).collect()
    }

    #[test]
    fn one_server_takes_everything() {
        let ring = Ring::new(&servers(1));
        assert_eq!(ring.server_for("anything"), 0);
    }

    #[test]
    fn keys_spread_and_few_move_when_a_server_is_added() {
        let keys: Vec<String> = (0..4000).map(|i| format!("cacheme:1:k{i}")).collect();
        let three = Ring::new(&servers(3));
        let four = Ring::new(&servers(4));
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for key in &keys {
            let before = three.server_for(key);
            counts[before] += 1;
            let after = four.server_for(key);
            if after != before {
                assert_eq!(after, 3, "a key only ever moves to the new server");
                moved += 1;
            }
        }
        for count in counts {
            assert!(count > 700, "uneven spread: {counts:?}");
        }
        assert!(moved < 2000, "{moved} of 4000 keys moved");
        assert_eq!(
            three.server_for("x"),
            Ring::new(&servers(3)).server_for("x"),
            "deterministic"
        );
    }
}
