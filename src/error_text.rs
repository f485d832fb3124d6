//! How an error reads to a user: the context chain on one line, each message once.
//!
//! `anyhow`'s `{:#}` joins every cause with ": ". Some causes repeat the message of the one
//! they wrap (candle's `Io` error prints "I/O error: {io}" and then has the same `io` as its
//! source), which made a full disk read "File too large (os error 27): File too large (os
//! error 27)". A cause whose text is already part of the line so far is left out.

/// The error and its causes, outermost first, each distinct message once.
pub fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like the errors that repeat their source: "I/O error: {source}" plus `source()`.
    #[derive(Debug)]
    struct Wrapping(std::io::Error);

    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "I/O error: {}", self.0)
        }
    }

    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn repeated_causes_are_said_once() {
        let inner = anyhow::Error::new(Wrapping(std::io::Error::from_raw_os_error(27))).context("cannot write checkpoint /x");
        let plain = format!("{inner:#}");
        assert_eq!(plain.matches("os error 27").count(), 2, "{plain}");
        let text = describe(&inner);
        assert_eq!(text.matches("os error 27").count(), 1, "{text}");
        assert!(text.starts_with("cannot write checkpoint /x: I/O error: "), "{text}");
        let distinct = anyhow::anyhow!("b").context("a");
        assert_eq!(describe(&distinct), "a: b");
    }
}
