//! The backend conformance suite (cacheme-test-support/src/conformance.rs),
//! run unchanged against every provider.

use cacheme_test_support::conformance::{MemoryFixture, RedisFixture};
use cacheme_test_support::conformance_suite;

mod memory {
    use super::*;
    conformance_suite!(MemoryFixture::default());
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    conformance_suite!(RedisFixture::start());
}

#[cfg(feature = "file")]
mod file {
    use super::*;
    conformance_suite!(cacheme_test_support::FileFixture::start());
}

#[cfg(feature = "memcached")]
mod memcached {
    use cacheme_test_support::MemcachedFixture;
    use cacheme_test_support::conformance_suite;
    conformance_suite!(MemcachedFixture::start());
}

#[cfg(feature = "redis-cluster")]
mod redis_cluster {
    use super::*;
    use cacheme_test_support::RedisClusterFixture;
    conformance_suite!(RedisClusterFixture::start());
}
