//! Secret masking for `push`: every occurrence of a secret value is replaced with `***`
//! before a line leaves the machine.

use std::borrow::Cow;

/// What a masked secret is replaced with.
pub const MASK: &str = "***";

/// Environment variable of extra secrets, one per line.
pub const ENV_MASK: &str = "TAILGATE_MASK";

/// The secrets to hide.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Longest first, so a secret that contains another is hidden whole.
    secrets: Vec<String>,
}

impl Masker {
    /// Empty values are ignored.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .map(Into::into)
            .filter(|s| !s.is_empty())
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// The flag values plus each line of the `TAILGATE_MASK` value.
    pub fn from_flags_and_env(flags: &[String], env: Option<&str>) -> Self {
        let from_env = env
            .into_iter()
            .flat_map(str::lines)
            .map(|l| l.trim_end_matches('\r').to_string());
        Self::new(flags.iter().cloned().chain(from_env))
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `line` with each secret replaced by [`MASK`], scanning left to right.
    pub fn mask<'a>(&self, line: &'a str) -> Cow<'a, str> {
        if !self.secrets.iter().any(|s| line.contains(s.as_str())) {
            return Cow::Borrowed(line);
        }
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        while !rest.is_empty() {
            if let Some(s) = self.secrets.iter().find(|s| rest.starts_with(s.as_str())) {
                out.push_str(MASK);
                rest = &rest[s.len()..];
            } else {
                let ch = rest.chars().next().map_or(1, char::len_utf8);
                out.push_str(&rest[..ch]);
                rest = &rest[ch..];
            }
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_every_occurrence_longest_first() {
        let m = Masker::new(["hunter2", "hunter2-admin", "", "*"]);
        assert_eq!(
            m.mask("pw=hunter2-admin;hunter2 é hunter2"),
            "pw=***;*** é ***"
        );
        assert_eq!(m.mask("a*b"), "a***b");
        assert!(matches!(m.mask("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn env_lines_are_secrets() {
        let m = Masker::from_flags_and_env(&["flag".into()], Some("one\r\ntwo\n\n"));
        assert_eq!(m.mask("flag one two three"), "*** *** *** three");
        assert!(Masker::from_flags_and_env(&[], None).is_empty());
    }
}
