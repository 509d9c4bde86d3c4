//! Key templates: `"book:<category_id>:<book_id>"` split into literal text
//! and `<variables>` at compile time.

/// A piece of a template.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// A `<variable>`.
    Var(String),
}

/// Splits a template into parts, or says what is malformed.
pub fn parse(template: &str) -> Result<Vec<Part>, String> {
    if template.is_empty() {
        return Err("the key template is empty; give one such as \"book:<id>\"".to_owned());
    }
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '<' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some((_, '>')) => break,
                        Some((_, '<')) => {
                            return Err(format!("`<` inside a variable at byte {at} of the key template"));
                        }
                        Some((_, c)) => name.push(c),
                        None => return Err(format!("unclosed `<` at byte {at} of the key template; write `<name>`")),
                    }
                }
                if name.is_empty() {
                    return Err(format!(
                        "empty variable `<>` at byte {at} of the key template; write `<name>`"
                    ));
                }
                if !is_identifier(&name) {
                    return Err(format!("`<{name}>` in the key template is not a parameter name"));
                }
                if !literal.is_empty() {
                    parts.push(Part::Lit(std::mem::take(&mut literal)));
                }
                parts.push(Part::Var(name));
            }
            '>' => return Err(format!("`>` without `<` at byte {at} of the key template")),
            c if c.is_whitespace() || c.is_control() => {
                return Err(format!(
                    "the key template contains whitespace or a control character at byte {at}; keys must not"
                ));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Lit(literal));
    }
    Ok(parts)
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && name != "_"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_literals_and_variables() {
        assert_eq!(
            parse("book:<category_id>:<book_id>").unwrap(),
            [
                Part::Lit("book:".into()),
                Part::Var("category_id".into()),
                Part::Lit(":".into()),
                Part::Var("book_id".into())
            ]
        );
        assert_eq!(parse("<a><b>").unwrap(), [Part::Var("a".into()), Part::Var("b".into())]);
        assert_eq!(parse("static").unwrap(), [Part::Lit("static".into())]);
    }

    #[test]
    fn says_what_is_malformed() {
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(parse("book:<id").unwrap_err().contains("unclosed"));
        assert!(parse("book:<>").unwrap_err().contains("empty variable"));
        assert!(parse("book:id>").unwrap_err().contains("without `<`"));
        assert!(parse("book:<a<b>>").unwrap_err().contains("inside"));
        assert!(parse("book:<1x>").unwrap_err().contains("not a parameter name"));
        assert!(parse("book <id>").unwrap_err().contains("whitespace"));
    }
}
