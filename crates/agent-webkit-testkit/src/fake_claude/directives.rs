//! `[[name: arg]]` directives embedded in user messages.

/// One directive, in the order it appears in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Directive {
    Bash(String),
    Read(String),
    Ask {
        question: String,
        options: Vec<String>,
    },
    Slow(usize),
    Cancel,
    SelfTurn,
    UnknownRequest,
    Crash,
    Garbage,
    Huge(usize),
    Blocks(usize),
    Stderr(usize),
    Hang,
    ApiError,
    AuthRetry,
    /// `system/task_started` for a background task that outlives the turn.
    Background(String),
    /// `system/task_notification` (completed) for that task.
    BackgroundDone(String),
}

impl Directive {
    /// Whether this directive produces the turn's reply (otherwise it only modifies behaviour,
    /// and the turn still ends with a normal echo).
    pub(crate) fn replies(&self) -> bool {
        !matches!(
            self,
            Directive::SelfTurn
                | Directive::Crash
                | Directive::Garbage
                | Directive::Stderr(_)
                | Directive::Hang
                | Directive::Background(_)
                | Directive::BackgroundDone(_)
        )
    }
}

/// Extracts the known directives from `text`, in order. Unknown `[[...]]` are ignored.
pub(crate) fn parse(text: &str) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("[[") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("]]") else { break };
        let inner = &after[..end];
        rest = &after[end + 2..];
        let (name, arg) = match inner.split_once(':') {
            Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim())),
            None => (inner.trim().to_ascii_lowercase(), None),
        };
        let number = || arg.and_then(|a| a.parse::<usize>().ok());
        let directive = match (name.as_str(), arg) {
            ("bash", Some(cmd)) => Some(Directive::Bash(cmd.to_owned())),
            ("read", Some(path)) => Some(Directive::Read(path.to_owned())),
            ("ask", Some(spec)) => {
                let mut parts = spec.split('|').map(|p| p.trim().to_owned());
                let question = parts.next().unwrap_or_default();
                let options: Vec<String> = parts.filter(|p| !p.is_empty()).collect();
                Some(Directive::Ask { question, options })
            }
            ("slow", _) => number().map(Directive::Slow),
            ("huge", _) => number().map(Directive::Huge),
            ("blocks", _) => number().map(Directive::Blocks),
            ("stderr", _) => number().map(Directive::Stderr),
            ("cancel", None) => Some(Directive::Cancel),
            ("self_turn", None) => Some(Directive::SelfTurn),
            ("unknown_request", None) => Some(Directive::UnknownRequest),
            ("crash", None) => Some(Directive::Crash),
            ("garbage", None) => Some(Directive::Garbage),
            ("hang", None) => Some(Directive::Hang),
            ("api_error", None) => Some(Directive::ApiError),
            ("auth_retry", None) => Some(Directive::AuthRetry),
            ("background", Some(id)) => Some(Directive::Background(id.to_owned())),
            ("background_done", Some(id)) => Some(Directive::BackgroundDone(id.to_owned())),
            _ => None,
        };
        out.extend(directive);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_in_order() {
        let d =
            parse("hi [[bash: ls -la]] x [[ask: Color? | Red | Blue]][[slow: 3]][[nope]][[crash]]");
        assert_eq!(
            d,
            vec![
                Directive::Bash("ls -la".into()),
                Directive::Ask {
                    question: "Color?".into(),
                    options: vec!["Red".into(), "Blue".into()]
                },
                Directive::Slow(3),
                Directive::Crash,
            ]
        );
        assert!(parse("plain text").is_empty());
    }
}
