//! One-line error reports, for the CLI's stderr and the daemon's `{"error": …}`.
//!
//! Error texts quote hostile data: tar header bytes, entry names, registry bodies. A
//! report must stay one line a terminal cannot be steered by, so control characters
//! are escaped and each part of the chain is capped.

use std::fmt::Write as _;

/// Longest text kept of one error in the chain; what a parser quotes of a bad input
/// (a whole 512-byte tar header, say) is cut there.
const MAX_PART_CHARS: usize = 400;

/// The error and its sources as one line, `outer: inner: …`. A source whose text its
/// parent already ends with (thiserror's `transparent`, or a message that quotes its
/// cause) is left out; control characters (newlines, ESC) are escaped.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !parts.last().is_some_and(|p| p.ends_with(text.as_str())) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// `text` with control characters escaped as `\n`, `\u{1b}`, …, cut to
/// [`MAX_PART_CHARS`] characters.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_PART_CHARS));
    for (n, c) in text.chars().enumerate() {
        if n == MAX_PART_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() || is_invisible_format(c) {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Zero-width and bidirectional-override characters: not control characters, but they
/// hide or reorder what a reader sees (the "Trojan Source" trick), so they are shown
/// escaped too.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Leaf(String);

    #[derive(Debug, thiserror::Error)]
    #[error("failed to pull {what}")]
    struct Outer {
        what: String,
        #[source]
        source: Leaf,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read: {source}")]
    struct Quoting {
        #[source]
        source: Leaf,
    }

    #[test]
    fn reports_are_one_line_with_hostile_text_escaped_and_cut() {
        let e = Outer { what: "aci:x".into(), source: Leaf("bad header\nroot:x:0:0\u{1b}[2J".into()) };
        assert_eq!(report(&e), "failed to pull aci:x: bad header\\nroot:x:0:0\\u{1b}[2J");
        let e = Leaf("evil\u{202e}txt.exe\u{200b}".into());
        assert_eq!(report(&e), "evil\\u{202e}txt.exe\\u{200b}");
        let long = Leaf("a".repeat(1000));
        let text = report(&long);
        assert_eq!(text.chars().count(), MAX_PART_CHARS + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn a_cause_the_parent_quotes_is_not_repeated() {
        let e = Quoting { source: Leaf("no such file".into()) };
        assert_eq!(report(&e), "cannot read: no such file");
    }
}
