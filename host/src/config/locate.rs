//! Locating a mistake in a TOML file: the 1-based line of a span, and for
//! an error from the TOML parser or from deserialising, its line, the text
//! of that line and the parser's message, trimmed. The daemon's
//! configuration and the recovery kits' manifests report their mistakes
//! through this.

/// The 1-based line of byte `offset` in `text` (the last line for an
/// offset past the end).
#[must_use]
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Where a TOML error points, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<'a> {
    /// The 1-based line, when the error has a place.
    pub line: Option<usize>,
    /// That line of the text, trimmed (the parser's message does not
    /// always name the field, so callers quote it).
    pub source: Option<&'a str>,
    /// The parser's message, trimmed to one line.
    pub message: String,
}

/// Locates `error`, from parsing or deserialising `text`.
#[must_use]
pub fn toml_error<'a>(text: &'a str, error: &toml::de::Error) -> Located<'a> {
    let line = error.span().map(|span| line_of(text, span.start));
    Located {
        line,
        source: line.and_then(|n| text.lines().nth(n - 1)).map(str::trim),
        message: error.message().trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_count_from_one() {
        let text = "a = 1\nb = 2\n\nc = 3";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 5), 1, "the newline ends line 1");
        assert_eq!(line_of(text, 6), 2);
        assert_eq!(line_of(text, text.len()), 4);
        assert_eq!(line_of(text, 1000), 4, "past the end: the last line");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
    }

    #[test]
    fn a_toml_error_names_its_line_and_quotes_it() {
        let text = "name = \"x\"\n  colour = \"blue\"  \n";
        let error = toml::from_str::<Sample>(text).unwrap_err();
        let located = toml_error(text, &error);
        assert_eq!(located.line, Some(2));
        assert_eq!(located.source, Some("colour = \"blue\""));
        assert!(
            located.message.contains("unknown field `colour`"),
            "{located:?}"
        );
        assert!(!located.message.contains('\n'), "{located:?}");
    }
}
