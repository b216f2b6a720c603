//! orderly-server: the standalone order server (`orderly serve`) and the command-line tool.
//!
//! **Architecture Invariant:** only this crate knows HTTP and JSON; it turns requests into the
//! core's commands and queries and their answers back into responses, and decides nothing.

pub mod api;
pub mod app;
pub mod bench;
pub mod connections;
pub mod error;
pub mod extract;
pub mod load;
pub mod metrics;
pub mod serve;
pub mod tenants;

/// `error` and its causes in one line, each cause once: orderly's errors already name their
/// cause in their own message (`the log is corrupt: record checksum mismatch in …`), which
/// `{:#}` would print a second time.
#[must_use]
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.contains(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("disk on fire");
        let named = anyhow::Error::new(io).context("cannot read the log: disk on fire");
        assert_eq!(describe(&named), "cannot read the log: disk on fire");
        let unnamed = anyhow::anyhow!("disk on fire").context("cannot open the data folder");
        assert_eq!(describe(&unnamed), "cannot open the data folder: disk on fire");
    }
}
