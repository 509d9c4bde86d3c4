//! Every mistake in a `#[cache_store]` declaration is a compile error with
//! a span; `tests/ui/` holds one mistake per file and its expected message.
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite` after a
//! deliberate change, and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
