//! Which keys a template produces, decided exactly: whether a key is one
//! of a template's ([`produces`]) and whether two templates can produce the
//! same key ([`shared_key`]), by one automaton.
//!
//! A template reads a key character by character: a literal character
//! matches itself, a variable matches any *escaped* value, that is any run
//! of characters that [`needs_escape`] lets through plus `%HH` escapes of
//! characters it does not (uppercase hex, as [`push_param`](super::push_param)
//! writes them). So a variable never matches a `:` (every key has exactly
//! as many segments as its template) nor a lone `%`, `*`, `{`... that a
//! literal may hold. Two templates collide exactly when the product of their
//! automata reaches the end of both, and the path it took is an example key.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use super::{Part, needs_escape};

/// One step of a template: a literal character or a whole variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    Var,
}

fn tokens(parts: &[Part]) -> Vec<Token> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Lit(text) => out.extend(text.chars().map(Token::Char)),
            Part::Var(_) => out.push(Token::Var),
        }
    }
    out
}

/// How far a variable's escaped value has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Inside {
    /// Nothing read yet, and the value must not be empty (example search).
    Fresh,
    /// A complete value so far: the variable may end here.
    Open,
    /// After the `%` of an escape.
    Percent,
    /// After `%` and the escape's first hex digit.
    Hex(u8),
}

/// Where a template is in the key it reads: before token `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct State {
    at: usize,
    inside: Inside,
}

/// A template as an automaton. `non_empty`: variables match non-empty
/// values only (examples read better as `user:1` than `user:`).
struct Nfa<'t> {
    tokens: &'t [Token],
    non_empty: bool,
}

/// A character a variable may hold as is; stands for every such character
/// when two variables are read together.
const PLAIN: char = '1';
const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl Nfa<'_> {
    fn enter(&self, at: usize) -> State {
        let fresh = self.non_empty && self.tokens.get(at) == Some(&Token::Var);
        State {
            at,
            inside: if fresh { Inside::Fresh } else { Inside::Open },
        }
    }

    fn accepts(&self, state: State) -> bool {
        state.at == self.tokens.len()
    }

    /// The move that reads nothing: the current variable's value ends.
    fn skip(&self, state: State) -> Option<State> {
        (self.tokens.get(state.at) == Some(&Token::Var) && state.inside == Inside::Open)
            .then(|| self.enter(state.at + 1))
    }

    /// The move that reads `c`, if there is one.
    fn step(&self, state: State, c: char) -> Option<State> {
        let inside = match (self.tokens.get(state.at)?, state.inside) {
            (Token::Char(lit), _) => return (*lit == c).then(|| self.enter(state.at + 1)),
            (Token::Var, Inside::Fresh | Inside::Open) if c == '%' => Inside::Percent,
            (Token::Var, Inside::Fresh | Inside::Open) => {
                (!(c.is_ascii() && needs_escape(c as u8))).then_some(Inside::Open)?
            }
            (Token::Var, Inside::Percent) => {
                let high = hex_digit(c)?;
                (0..16)
                    .any(|low| needs_escape((high << 4) | low))
                    .then_some(Inside::Hex(high))?
            }
            (Token::Var, Inside::Hex(high)) => needs_escape((high << 4) | hex_digit(c)?).then_some(Inside::Open)?,
        };
        Some(State { at: state.at, inside })
    }

    /// The characters worth trying from `state` besides [`PLAIN`].
    fn specials(&self, state: State) -> Vec<char> {
        match (self.tokens.get(state.at), state.inside) {
            (None, _) => Vec::new(),
            (Some(Token::Char(lit)), _) => vec![*lit],
            (Some(Token::Var), Inside::Fresh | Inside::Open) => vec!['%'],
            (Some(Token::Var), _) => HEX.iter().map(|&b| char::from(b)).collect(),
        }
    }

    /// `states` and every state reachable from them by [`skip`](Self::skip).
    fn close(&self, states: &mut Vec<State>) {
        let mut i = 0;
        while let Some(&state) = states.get(i) {
            if let Some(next) = self.skip(state)
                && !states.contains(&next)
            {
                states.push(next);
            }
            i += 1;
        }
    }
}

fn hex_digit(c: char) -> Option<u8> {
    let at = HEX.iter().position(|&b| char::from(b) == c)?;
    u8::try_from(at).ok()
}

/// Whether `text` is a key body (a key without its `:v{version}`) that
/// `parts` produces for some values.
pub(super) fn produces(parts: &[Part], text: &str) -> bool {
    let tokens = tokens(parts);
    let nfa = Nfa {
        tokens: &tokens,
        non_empty: false,
    };
    let mut states = vec![nfa.enter(0)];
    nfa.close(&mut states);
    for c in text.chars() {
        let mut next = Vec::new();
        for state in states.iter().filter_map(|&state| nfa.step(state, c)) {
            if !next.contains(&state) {
                next.push(state);
            }
        }
        nfa.close(&mut next);
        if next.is_empty() {
            return false;
        }
        states = next;
    }
    states.into_iter().any(|state| nfa.accepts(state))
}

/// A key body both `a` and `b` produce (for some values of their
/// variables), or `None` when no such body exists. The example gives
/// variables non-empty values where it can.
pub(super) fn shared_key(a: &[Part], b: &[Part]) -> Option<String> {
    let (a, b) = (tokens(a), tokens(b));
    search(&a, &b, true).or_else(|| search(&a, &b, false))
}

/// Breadth-first search of the product automaton; the path to a state
/// where both templates end spells the shared key.
fn search(a: &[Token], b: &[Token], non_empty: bool) -> Option<String> {
    let a = Nfa { tokens: a, non_empty };
    let b = Nfa { tokens: b, non_empty };
    let start = (a.enter(0), b.enter(0));
    let mut came_from = Trail::new();
    came_from.insert(start, None);
    let mut queue = VecDeque::from([start]);
    while let Some(pair @ (x, y)) = queue.pop_front() {
        if a.accepts(x) && b.accepts(y) {
            return Some(spell(&came_from, pair));
        }
        let mut moves = Vec::new();
        let mut chars = vec![PLAIN];
        chars.extend(a.specials(x));
        chars.extend(b.specials(y));
        for c in chars {
            if let (Some(x2), Some(y2)) = (a.step(x, c), b.step(y, c)) {
                moves.push(((x2, y2), Some(c)));
            }
        }
        if let Some(x2) = a.skip(x) {
            moves.push(((x2, y), None));
        }
        if let Some(y2) = b.skip(y) {
            moves.push(((x, y2), None));
        }
        for (next, c) in moves {
            if let Entry::Vacant(entry) = came_from.entry(next) {
                entry.insert(Some((pair, c)));
                queue.push_back(next);
            }
        }
    }
    None
}

/// Each pair reached, with the pair and the character (`None`: a
/// variable ended) it was reached from; the start has `None`.
type Trail = HashMap<Pair, Option<(Pair, Option<char>)>>;

/// The states of the two templates read together.
type Pair = (State, State);

fn spell(came_from: &Trail, mut pair: Pair) -> String {
    let mut reversed = Vec::new();
    while let Some(Some((previous, c))) = came_from.get(&pair) {
        reversed.extend(*c);
        pair = *previous;
    }
    reversed.into_iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::push_param;

    /// Parses `"foo:<id>:info"` the way the macro does (enough for tests).
    fn parts(template: &'static str) -> Vec<Part> {
        let mut out = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('<') {
            if open > 0 {
                out.push(Part::Lit(&rest[..open]));
            }
            let close = open + rest[open..].find('>').unwrap();
            out.push(Part::Var(&rest[open + 1..close]));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            out.push(Part::Lit(rest));
        }
        out
    }

    fn shared(a: &'static str, b: &'static str) -> Option<String> {
        let (a, b) = (parts(a), parts(b));
        let found = shared_key(&a, &b);
        assert_eq!(found.is_some(), shared_key(&b, &a).is_some(), "symmetric");
        if let Some(key) = &found {
            assert!(produces(&a, key) && produces(&b, key), "{key:?} is a key of both");
        }
        found
    }

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        push_param(&mut out, value);
        out
    }

    #[test]
    fn variables_against_literals_find_the_key_both_write() {
        assert_eq!(
            shared("foo:<id>:info", "foo:list:<id>").as_deref(),
            Some("foo:list:info")
        );
        assert_eq!(shared("foo:bar", "foo:<x>").as_deref(), Some("foo:bar"));
        assert_eq!(shared("<kind>:<id>", "user:<id>").as_deref(), Some("user:1"));
        assert_eq!(shared("user-<id>", "<name>").as_deref(), Some("user-1"));
        assert_eq!(shared("a:<x>b", "a:<y>").as_deref(), Some("a:1b"));
        // A store prefix is a literal segment like any other.
        assert_eq!(
            shared("shop:book:<id>", "<c>:book:<id>").as_deref(),
            Some("shop:book:1")
        );
    }

    #[test]
    fn same_shape_overlaps() {
        assert_eq!(shared("user:<id>", "user:<account_id>").as_deref(), Some("user:1"));
        assert_eq!(shared("static", "static").as_deref(), Some("static"));
    }

    #[test]
    fn same_literals_with_another_number_of_segments_never_overlap() {
        assert_eq!(shared("foo:<id>", "foo:<a>:<b>"), None);
        assert_eq!(shared("foo:<id>", "foo:<id>:info"), None);
        assert_eq!(shared("foo", "foo:<id>"), None);
        assert_eq!(shared("foo:<a>:<b>", "foo:<a>:<b>:<c>"), None);
    }

    #[test]
    fn different_literals_never_overlap() {
        assert_eq!(shared("user:<id>", "users:<id>"), None);
        assert_eq!(shared("foo:<id>:info", "foo:<id>:list"), None);
        assert_eq!(shared("a:<x>b", "a:<y>c"), None);
    }

    #[test]
    fn only_escaped_values_count() {
        // `*`, `%` alone, `{` are escaped in values: a literal holding one is
        // out of every variable's reach.
        assert_eq!(shared("report:<id>", "report:*"), None);
        assert_eq!(shared("report:<id>", "report:{all}"), None);
        assert_eq!(shared("p:<x>", "p:100%"), None);
        assert_eq!(shared("p:<x>", "p:%41"), None, "`A` is never escaped");
        assert_eq!(shared("p:<x>", "p:%3a"), None, "escapes are uppercase");
        // ...but the escape of one is a value like any other.
        assert_eq!(shared("p:<x>", "p:%3A").as_deref(), Some("p:%3A"));
        assert_eq!(escaped(":"), "%3A");
        assert_eq!(shared("p:<x>", "p:a%2Ab").as_deref(), Some("p:a%2Ab"));
        assert_eq!(escaped("a*b"), "a%2Ab");
    }

    #[test]
    fn an_empty_value_is_a_value() {
        assert_eq!(shared("a:<x>b", "a:b").as_deref(), Some("a:b"));
        assert_eq!(shared("<a><b>", "<c>").as_deref(), Some("11"));
        assert_eq!(shared("foo::bar", "foo:<x>:bar").as_deref(), Some("foo::bar"));
    }

    #[test]
    fn a_literal_that_looks_like_a_version_overlaps_a_variable() {
        // The version suffix `:v{version}` is one more segment; stores are
        // compared without it (a version never separates two stores), so
        // `foo:<id>:v2` (keys `foo:7:v2:v1`) meets `foo:<a>:<b>` at `b = v2`.
        assert_eq!(shared("foo:<a>:<b>", "foo:<id>:v2").as_deref(), Some("foo:1:v2"));
        assert_eq!(shared("foo:<id>", "foo:<id>:v2"), None);
    }

    #[test]
    fn produces_exactly_the_escaped_keys() {
        let book = parts("book:<category>:<id>");
        assert!(produces(&book, "book:7:42"));
        assert!(produces(&book, &format!("book:{}:", escaped("a:b"))));
        assert!(produces(&book, "book:ключ:🦀"));
        assert!(!produces(&book, "book:7:42:43"));
        assert!(!produces(&book, "book:7"));
        assert!(!produces(&book, "book:*:42"), "a value never holds a bare `*`");
        assert!(!produces(&book, "book:%:42"));
        assert!(!produces(&book, "book:%4:42"));
        assert!(!produces(&book, "books:7:42"));
        for value in ["", "a b", "100%", "x\n*?[]\\{}", "\u{7f}", "é:ü"] {
            let key = format!("book:{}:{}", escaped(value), escaped(value));
            assert!(produces(&book, &key), "{key:?}");
        }
    }
}
