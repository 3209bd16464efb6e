//! The web shell's command lines: split by shell-word rules (no shell ever runs them), and
//! confined to what kubectl may do on the gateway's host. A line is refused, with a one-line
//! reason, when a shell would interpret any of it (`;`, `|`, `&`, redirections, `$`, backticks,
//! parentheses, a newline), when it is not `kubectl SUBCOMMAND` with an allowed subcommand (kubectl
//! runs any `kubectl-WORD` it finds on PATH as a plugin), or when a flag would read or write the
//! gateway host's files or reach another host. What passes is the argv the child gets, exactly.

/// Why a line is refused (shown to the user and kept in the audit record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("empty command line: type a kubectl command, e.g. kubectl get pods")]
    Empty,
    #[error("unbalanced {0} quote: close it")]
    Quote(char),
    #[error("{0:?} is not run: the web shell runs kubectl itself, without a shell (no pipes, lists, redirections, substitutions or variables); quote it if it is part of an argument")]
    ShellSyntax(String),
    #[error("only kubectl runs here: start the line with kubectl")]
    NotKubectl,
    #[error("kubectl needs a subcommand, e.g. kubectl get pods")]
    NoSubcommand,
    #[error("kubectl {0} is not available in the web shell: {1}")]
    Subcommand(String, &'static str),
    #[error("{0} is not available in the web shell: {1}")]
    Flag(String, &'static str),
}

/// Subcommands the web shell runs.
pub const ALLOWED: &[&str] = &[
    "get",
    "describe",
    "logs",
    "exec",
    "attach",
    "top",
    "explain",
    "api-resources",
    "api-versions",
    "version",
    "cluster-info",
    "auth",
    "events",
    "apply",
    "create",
    "replace",
    "delete",
    "patch",
    "label",
    "annotate",
    "scale",
    "autoscale",
    "rollout",
    "set",
    "diff",
    "wait",
    "cordon",
    "uncordon",
    "drain",
    "taint",
    "expose",
    "run",
];

/// Why the well-known subcommands that are not allowed are refused.
fn refused_subcommand(word: &str) -> &'static str {
    match word {
        "config" => "it reads and writes the kubeconfig, which holds the shell's credential",
        "proxy" => "it would listen on the gateway's host",
        "port-forward" => "it would listen on the gateway's host",
        "cp" => "it copies files to and from the gateway's host",
        "kustomize" => "it reads directories on the gateway's host",
        "plugin" => "plugins are programs on the gateway's host",
        "debug" => "it can copy node filesystems and runs interactive sessions the shell does not confine",
        "edit" => "it starts an editor on the gateway's host; use kubectl patch or apply -f - (Paste manifest)",
        "completion" => "the web shell does not load completion scripts",
        _ => "only kubectl's own subcommands run here (kubectl would run any kubectl-WORD program on the gateway's PATH as a plugin)",
    }
}

/// Flags refused wherever they appear (before `--`), with the reason.
fn refused_flag(name: &str) -> Option<&'static str> {
    Some(match name {
        "--kubeconfig" | "--cache-dir" => "the shell uses its own kubeconfig and cache",
        "--server" | "-s" | "--tls-server-name" => {
            "the shell reaches clusters only through this gateway"
        }
        "--token" | "--username" | "--password" | "--client-certificate" | "--client-key" => {
            "the shell's credential is the web session's"
        }
        "--certificate-authority" | "--insecure-skip-tls-verify" => {
            "the shell trusts only this gateway"
        }
        "--kustomize" | "-k" => "it reads directories on the gateway's host",
        "--output-directory" => "it writes files on the gateway's host",
        "--from-file" | "--from-env-file" => "it reads files on the gateway's host",
        "--profile" | "--profile-output" | "--log-file" | "--log-dir" => {
            "it writes files on the gateway's host"
        }
        "--template" => "templates are given inline with -o go-template=… or -o jsonpath=…",
        _ => return None,
    })
}

/// Global flags that take a value as the next argument when written without `=`, so that the
/// value is not taken for the subcommand (`kubectl -n dev get pods`).
const VALUE_FLAGS: &[&str] = &[
    "-n",
    "--namespace",
    "--context",
    "--cluster",
    "--user",
    "--as",
    "--as-group",
    "--as-uid",
    "--request-timeout",
    "-v",
    "--v",
    "--vmodule",
    "--match-server-version",
    "--warnings-as-errors",
];

/// Splits a line into words by shell rules: whitespace separates, single quotes keep
/// everything, double quotes keep everything but `\"` and `\\`, a backslash outside quotes
/// keeps the next character. Everything a shell would interpret is refused, quoted or not
/// where the shell would still interpret it (`$` and backticks inside double quotes).
pub fn split(line: &str) -> Result<Vec<String>, Refused> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => word.push(ch),
                        None => return Err(Refused::Quote('\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\')) => word.push(ch),
                            Some(ch @ ('$' | '`')) => {
                                return Err(Refused::ShellSyntax(format!("\\{ch}")))
                            }
                            Some(ch) => {
                                word.push('\\');
                                word.push(ch);
                            }
                            None => return Err(Refused::Quote('"')),
                        },
                        Some(ch @ ('$' | '`')) => return Err(Refused::ShellSyntax(ch.to_string())),
                        Some(ch) => word.push(ch),
                        None => return Err(Refused::Quote('"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {
                        return Err(Refused::ShellSyntax("a trailing backslash".into()))
                    }
                    Some(ch) => word.push(ch),
                }
            }
            ';' | '|' | '&' | '>' | '<' | '`' | '$' | '(' | ')' | '\n' | '\r' => {
                let shown = match c {
                    '\n' | '\r' => "a line break".to_string(),
                    '&' if chars.peek() == Some(&'&') => "&&".to_string(),
                    '|' if chars.peek() == Some(&'|') => "||".to_string(),
                    '$' if chars.peek() == Some(&'(') => "$(".to_string(),
                    _ => c.to_string(),
                };
                return Err(Refused::ShellSyntax(shown));
            }
            c if c.is_control() => {
                return Err(Refused::ShellSyntax(format!("{:?}", c)));
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// A line that may run: kubectl's arguments (without `kubectl`) and the subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub args: Vec<String>,
    pub subcommand: String,
    /// The manifest comes from standard input (`-f -`): the shell supplies it.
    pub reads_stdin: bool,
}

impl Allowed {
    /// Whether the command runs until the user stops it (`exec -it`, `attach -i`, `logs -f`,
    /// `get -w`, `events -w`): such a command has no wall-clock limit, only the shell's idle
    /// timeout. Generous on purpose: a command counted interactive by mistake still ends
    /// with the shell.
    pub fn interactive(&self) -> bool {
        let letters: &[char] = match self.subcommand.as_str() {
            "exec" | "attach" => &['i', 't'],
            "logs" => &['f'],
            "get" | "events" => &['w'],
            _ => return false,
        };
        let long: &[&str] = match self.subcommand.as_str() {
            "exec" | "attach" => &["--stdin", "--tty"],
            "logs" => &["--follow"],
            _ => &["--watch", "--watch-only"],
        };
        self.args.iter().take_while(|a| *a != "--").any(|a| {
            let name = a.split('=').next().unwrap_or("");
            let off = a.ends_with("=false");
            if name.starts_with("--") {
                long.contains(&name) && !off
            } else if let Some(short) = name.strip_prefix('-') {
                // A bundle of one-letter flags (`-it`); `-n` and `-c` take a value.
                short
                    .chars()
                    .take_while(|c| !matches!(c, 'n' | 'c' | 'l' | 'o'))
                    .any(|c| letters.contains(&c))
                    && !off
            } else {
                false
            }
        })
    }
}

/// Splits and checks a line typed into the web shell.
pub fn check(line: &str) -> Result<Allowed, Refused> {
    let words = split(line)?;
    let Some((first, args)) = words.split_first() else {
        return Err(Refused::Empty);
    };
    if first != "kubectl" {
        return Err(Refused::NotKubectl);
    }
    // The subcommand: the first word that is neither a flag nor a global flag's value.
    let mut subcommand = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if VALUE_FLAGS.contains(&a.as_str()) {
                i += 1;
            }
            i += 1;
            continue;
        }
        subcommand = Some(a.clone());
        break;
    }
    let Some(sub) = subcommand else {
        return Err(Refused::NoSubcommand);
    };
    if !ALLOWED.contains(&sub.as_str()) {
        return Err(Refused::Subcommand(sub.clone(), refused_subcommand(&sub)));
    }
    if sub == "auth" {
        let rest = args[i + 1..].iter().find(|a| !a.starts_with('-'));
        if !matches!(rest.map(String::as_str), Some("can-i" | "whoami")) {
            return Err(Refused::Subcommand(
                format!("auth {}", rest.map_or("", |s| s.as_str()))
                    .trim_end()
                    .to_string(),
                "only kubectl auth can-i and kubectl auth whoami run here",
            ));
        }
    }
    let mut reads_stdin = false;
    let mut j = 0;
    while j < args.len() {
        let a = &args[j];
        if a == "--" {
            break;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if a.starts_with('-') => (n, Some(v)),
            _ => (a.as_str(), None),
        };
        if let Some(reason) = refused_flag(name) {
            return Err(Refused::Flag(name.to_string(), reason));
        }
        // -f / --filename: only "-" (the pasted manifest). (For logs, -f is --follow.)
        let file_value = if sub == "logs" {
            None
        } else if name == "-f" || name == "--filename" {
            Some(
                inline
                    .map(str::to_string)
                    .or_else(|| args.get(j + 1).cloned()),
            )
        } else {
            // -fFILE (short flags bundled after -f are not kubectl's).
            name.strip_prefix("-f")
                .filter(|_| !name.starts_with("--"))
                .map(|v| Some(v.to_string()))
        };
        if let Some(value) = file_value {
            match value.as_deref() {
                Some("-") => reads_stdin = true,
                _ => {
                    return Err(Refused::Flag(
                        format!("{name} {}", value.unwrap_or_default())
                            .trim_end()
                            .to_string(),
                        "manifests come from Paste manifest (-f -), never from the gateway's files",
                    ))
                }
            }
            if inline.is_none() && (name == "-f" || name == "--filename") {
                j += 1;
            }
        }
        // -o/--output templates that read files.
        let output = if name == "-o" || name == "--output" {
            inline
                .map(str::to_string)
                .or_else(|| args.get(j + 1).cloned())
        } else {
            name.strip_prefix("-o")
                .filter(|v| !v.is_empty() && !name.starts_with("--"))
                .map(str::to_string)
        };
        if let Some(format) = output {
            let kind = format.split('=').next().unwrap_or("");
            if kind.ends_with("-file") {
                return Err(Refused::Flag(
                    format!("-o {kind}"),
                    "templates are given inline (-o jsonpath=… or -o go-template=…), not read from the gateway's files",
                ));
            }
        }
        // Verbosity that prints requests' headers.
        let verbosity = if name == "-v" || name == "--v" {
            inline
                .map(str::to_string)
                .or_else(|| args.get(j + 1).cloned())
        } else {
            name.strip_prefix("-v")
                .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
                .map(str::to_string)
        };
        if let Some(level) = verbosity {
            if level.parse::<u32>().map_or(true, |l| l > 6) {
                return Err(Refused::Flag(
                    format!("-v={level}"),
                    "levels above 6 print requests' headers; use -v=6 at most",
                ));
            }
        }
        j += 1;
    }
    Ok(Allowed {
        args: args.to_vec(),
        subcommand: sub,
        reads_stdin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split(line).unwrap()
    }

    #[test]
    fn commands_that_run_until_stopped_are_interactive() {
        for line in [
            "kubectl exec -it web -- sh",
            "kubectl exec -ti web -- sh",
            "kubectl exec --stdin --tty web -- sh",
            "kubectl attach -i web",
            "kubectl logs -f web",
            "kubectl logs web --follow",
            "kubectl get pods -w",
            "kubectl get pods --watch-only",
            "kubectl events --watch",
        ] {
            assert!(check(line).unwrap().interactive(), "{line}");
        }
        for line in [
            "kubectl exec web -- ls",
            "kubectl logs web",
            "kubectl logs web -c follow",
            "kubectl get pods",
            "kubectl get pods --watch=false",
            "kubectl exec web -- sh -it",
            "kubectl describe pod web",
        ] {
            assert!(!check(line).unwrap().interactive(), "{line}");
        }
    }

    #[test]
    fn lines_split_like_a_shell_without_running_one() {
        assert_eq!(
            words("kubectl get pods -n dev"),
            ["kubectl", "get", "pods", "-n", "dev"]
        );
        assert_eq!(
            words(r#"kubectl get pods -l 'app in (a,b)' -o "jsonpath={.items[*].metadata.name}""#),
            [
                "kubectl",
                "get",
                "pods",
                "-l",
                "app in (a,b)",
                "-o",
                "jsonpath={.items[*].metadata.name}"
            ]
        );
        assert_eq!(
            words(r#"kubectl annotate pod x 'note=it'\''s'"#),
            ["kubectl", "annotate", "pod", "x", "note=it's"]
        );
        assert_eq!(words(r#"a "b \" c" d\ e"#), ["a", "b \" c", "d e"]);
        assert_eq!(words("  kubectl   version  "), ["kubectl", "version"]);
        assert_eq!(words(""), Vec::<String>::new());
    }

    #[test]
    fn anything_a_shell_would_interpret_is_refused() {
        for line in [
            "kubectl get pods; cat /etc/passwd",
            "kubectl get pods | grep x",
            "kubectl get pods && rm -rf /",
            "kubectl get pods || true",
            "kubectl get pods > /tmp/x",
            "kubectl apply -f - < /etc/passwd",
            "kubectl get $(cat /etc/hostname)",
            "kubectl get `id`",
            "kubectl get pods -n $HOME",
            "kubectl get \"pods $(id)\"",
            "kubectl get \"`id`\"",
            "kubectl get pods &",
            "kubectl get pods\ncat /etc/passwd",
            "(kubectl get pods)",
        ] {
            assert!(
                matches!(check(line), Err(Refused::ShellSyntax(_))),
                "{line:?}: {:?}",
                check(line)
            );
        }
        assert_eq!(check("kubectl get 'pods"), Err(Refused::Quote('\'')));
        assert_eq!(check("kubectl get \"pods"), Err(Refused::Quote('"')));
        // Quoted, a shell would not interpret them: they are arguments.
        assert!(check("kubectl annotate pod x 'a=b;c|d>e'").is_ok());
    }

    #[test]
    fn only_allowed_kubectl_subcommands_run() {
        assert_eq!(check("ls -la"), Err(Refused::NotKubectl));
        assert_eq!(check("/usr/bin/kubectl get pods"), Err(Refused::NotKubectl));
        assert_eq!(check("kubectl"), Err(Refused::NoSubcommand));
        assert_eq!(check("kubectl -n dev"), Err(Refused::NoSubcommand));
        for sub in [
            "config",
            "proxy",
            "port-forward",
            "cp",
            "kustomize",
            "plugin",
            "debug",
            "edit",
            "completion",
            "evil-plugin",
            "certificate",
        ] {
            let line = format!("kubectl {sub} x");
            assert!(
                matches!(check(&line), Err(Refused::Subcommand(s, _)) if s == sub),
                "{line}"
            );
        }
        assert!(matches!(
            check("kubectl config view --raw"),
            Err(Refused::Subcommand(..))
        ));
        let ok = check("kubectl -n dev get pods").unwrap();
        assert_eq!((ok.subcommand.as_str(), ok.args.len()), ("get", 4));
        assert_eq!(
            check("kubectl --context=x get pods").unwrap().subcommand,
            "get"
        );
        assert!(check("kubectl auth can-i get pods").is_ok());
        assert!(check("kubectl auth whoami").is_ok());
        assert!(matches!(
            check("kubectl auth reconcile -f -"),
            Err(Refused::Subcommand(..))
        ));
        for sub in ALLOWED {
            assert!(
                check(&format!("kubectl {sub}")).is_ok() || *sub == "auth",
                "{sub}"
            );
        }
    }

    #[test]
    fn flags_that_reach_the_host_or_other_hosts_are_refused() {
        for line in [
            "kubectl get pods --kubeconfig /etc/kubernetes/admin.conf",
            "kubectl get pods --kubeconfig=/x",
            "kubectl get pods -s https://10.0.0.1",
            "kubectl get pods --server=https://10.0.0.1",
            "kubectl get pods --token abc",
            "kubectl get pods --username a --password b",
            "kubectl get pods --client-certificate=/x --client-key=/y",
            "kubectl get pods --certificate-authority /x",
            "kubectl get pods --insecure-skip-tls-verify",
            "kubectl get pods --tls-server-name x",
            "kubectl get pods --cache-dir /tmp",
            "kubectl apply -f /etc/passwd",
            "kubectl apply --filename=/etc/passwd",
            "kubectl apply -f/etc/passwd",
            "kubectl apply -f https://example.com/x.yaml",
            "kubectl apply -k ./dir",
            "kubectl apply --kustomize=./dir",
            "kubectl create secret generic s --from-file=/etc/shadow",
            "kubectl create configmap c --from-env-file /etc/environment",
            "kubectl get pods -o go-template-file=/etc/passwd",
            "kubectl get pods -o jsonpath-file=/etc/passwd",
            "kubectl get pods --output=go-template-file=/x",
            "kubectl get pods -ojsonpath-file=/x",
            "kubectl get pods --template /x",
            "kubectl get pods --profile=cpu --profile-output=/tmp/p",
            "kubectl get pods -v=9",
            "kubectl get pods -v 8",
            "kubectl get pods --v=10",
            "kubectl apply -f",
        ] {
            assert!(
                matches!(check(line), Err(Refused::Flag(..))),
                "{line:?}: {:?}",
                check(line)
            );
        }
        let stdin = check("kubectl apply -f -").unwrap();
        assert!(stdin.reads_stdin);
        assert!(check("kubectl diff --filename=-").unwrap().reads_stdin);
        assert!(check("kubectl get pods -o jsonpath={.items[0].metadata.name}").is_ok());
        assert!(check("kubectl get pods -v=6").is_ok());
        assert!(!check("kubectl logs -f web").unwrap().reads_stdin);
        // After `--` the words are the container's command, not kubectl's flags.
        assert!(check("kubectl exec -it web -- cat /etc/passwd --kubeconfig x").is_ok());
    }
}
