//! `cargo cacheme check`: every declaration through the macro's checks,
//! then every pair through the runtime's duplicate rule (the same name,
//! the same key shape, or key templates that can produce the same key).

use cacheme_runtime::store::spec::check_unique;

use crate::decl::Declaration;
use crate::error::Result;
use crate::opt::SourceOpt;
use crate::scan::{self, Problem};

/// Runs the check and prints its findings; the exit code is 1 when there
/// is any problem.
pub fn run(opt: &SourceOpt) -> Result<i32> {
    let sources = scan::crate_sources(opt.manifest_path.as_deref())?;
    let mut problems = sources.problems.clone();
    problems.extend(duplicates(&sources.stores));
    problems.sort();
    for problem in &problems {
        println!("{problem}");
    }
    let stores = sources.stores.len();
    let files = sources.files;
    if problems.is_empty() {
        println!("ok: {stores} store(s) in {files} file(s), no problems");
        Ok(0)
    } else {
        println!(
            "{} problem(s) in {files} file(s) ({stores} valid store(s))",
            problems.len()
        );
        Ok(1)
    }
}

/// Stores that share a name or could share a key, by the rule the client
/// applies when it is built ([`check_unique`]): one problem per clashing
/// pair, placed at the later declaration.
pub fn duplicates(stores: &[Declaration]) -> Vec<Problem> {
    let specs: Vec<_> = stores.iter().map(Declaration::spec).collect();
    let mut problems = Vec::new();
    for (i, a) in specs.iter().enumerate() {
        for b in &specs[i + 1..] {
            if let Err(clash) = check_unique(&[a, b]) {
                let later = if (a.file, a.line) <= (b.file, b.line) { b } else { a };
                problems.push(Problem {
                    file: later.file.to_owned(),
                    line: later.line as usize,
                    column: 1,
                    message: clash.to_string(),
                });
            }
        }
    }
    problems
}
