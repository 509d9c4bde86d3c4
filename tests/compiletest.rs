//! Every mistake in a `#[cache_store]` declaration is a compile error with
//! a span; `tests/ui/` holds one mistake per file and its expected message.
//! `tests/ui-pass/` holds programs that must compile, warnings denied
//! (trybuild itself allows `dead_code`).
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite` after a
//! deliberate change, and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
