//! Keeping secrets out of audit records: flag values in a command line and secret-looking
//! query parameters.

/// Flags whose value is a secret. Both `--flag value` and `--flag=value` are handled.
const SECRET_FLAGS: &[&str] = &[
    "--token",
    "--password",
    "--client-key",
    "--docker-password",
    "--auth-provider-arg",
    "--client-secret",
    "--secret",
    "--bearer-token",
];

/// Flags of the form `--flag key=value` whose value part is a secret.
const SECRET_KEY_VALUE_FLAGS: &[&str] = &["--from-literal"];

/// Flags of the form `--flag KEY=value` whose value is secret when the key looks like one.
const ENV_FLAGS: &[&str] = &["--env", "-e"];

pub const REDACTED: &str = "***";

/// Returns `argv` with secret values replaced by `***`.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut pending: Option<Pending> = None;
    for arg in argv {
        if let Some(kind) = pending.take() {
            out.push(kind.redact(arg));
            continue;
        }
        if arg == "--" {
            out.push(arg.clone());
            continue;
        }
        if let Some((flag, value)) = arg.split_once('=') {
            if let Some(kind) = Pending::for_flag(flag) {
                out.push(format!("{flag}={}", kind.redact(value)));
                continue;
            }
        } else if let Some(kind) = Pending::for_flag(arg) {
            pending = Some(kind);
        }
        out.push(arg.clone());
    }
    out
}

#[derive(Clone, Copy)]
enum Pending {
    Whole,
    KeyValue,
    Env,
}

impl Pending {
    fn for_flag(flag: &str) -> Option<Pending> {
        if SECRET_FLAGS.contains(&flag) {
            Some(Pending::Whole)
        } else if SECRET_KEY_VALUE_FLAGS.contains(&flag) {
            Some(Pending::KeyValue)
        } else if ENV_FLAGS.contains(&flag) {
            Some(Pending::Env)
        } else {
            None
        }
    }

    fn redact(self, value: &str) -> String {
        match self {
            Pending::Whole => REDACTED.to_string(),
            Pending::KeyValue => match value.split_once('=') {
                Some((key, _)) => format!("{key}={REDACTED}"),
                None => REDACTED.to_string(),
            },
            Pending::Env => match value.split_once('=') {
                Some((key, _)) if looks_secret(key) => format!("{key}={REDACTED}"),
                _ => value.to_string(),
            },
        }
    }
}

/// Whether a parameter or variable name suggests a secret value.
pub fn looks_secret(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [
        "token",
        "password",
        "passwd",
        "secret",
        "apikey",
        "api_key",
        "credential",
        "private_key",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// Returns the query string with the values of secret-looking parameters replaced.
pub fn redact_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if looks_secret(key) => format!("{key}={REDACTED}"),
            _ => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Joins argv into one line that a shell would split back the same way.
pub fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+*".contains(c));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn secret_flags_are_redacted_in_both_forms() {
        let got = redact_argv(&argv(&[
            "kubectl",
            "--token",
            "abc",
            "get",
            "po",
            "--password=hunter2",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=user=admin",
            "--from-literal",
            "pw=x",
            "--docker-password",
            "dp",
            "--client-key=/k",
            "--env",
            "DB_PASSWORD=p",
            "--env=MODE=debug",
            "-n",
            "prod",
        ]));
        assert_eq!(
            got,
            argv(&[
                "kubectl",
                "--token",
                "***",
                "get",
                "po",
                "--password=***",
                "create",
                "secret",
                "generic",
                "s",
                "--from-literal=user=***",
                "--from-literal",
                "pw=***",
                "--docker-password",
                "***",
                "--client-key=***",
                "--env",
                "DB_PASSWORD=***",
                "--env=MODE=debug",
                "-n",
                "prod",
            ])
        );
    }

    #[test]
    fn a_trailing_secret_flag_without_value_is_kept() {
        assert_eq!(
            redact_argv(&argv(&["kubectl", "--token"])),
            argv(&["kubectl", "--token"])
        );
    }

    #[test]
    fn query_secrets_are_redacted() {
        assert_eq!(
            redact_query("watch=true&access_token=x&Password=y"),
            "watch=true&access_token=***&Password=***"
        );
        assert_eq!(redact_query(""), "");
    }

    #[test]
    fn shell_join_quotes_what_needs_it() {
        assert_eq!(
            shell_join(&argv(&[
                "kubectl",
                "get",
                "po",
                "-l",
                "app in (web)",
                "it's"
            ])),
            r#"kubectl get po -l 'app in (web)' 'it'\''s'"#
        );
    }
}
