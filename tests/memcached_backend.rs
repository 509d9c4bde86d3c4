//! memcached-specific behaviour (placeholder).
