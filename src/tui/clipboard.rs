//! Copying text: OSC 52 asks the terminal (also over SSH and in tmux with `set-clipboard on`),
//! and a clipboard tool, when one is installed, covers terminals that ignore OSC 52.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;

/// The OSC 52 sequence that sets the clipboard to `text`.
pub fn osc52(text: &str) -> String {
    format!(
        "\x1b]52;c;{}\x07",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// The clipboard tools worth trying here, in order, with their arguments.
fn tools() -> Vec<(&'static str, &'static [&'static str])> {
    let mut tools: Vec<(&'static str, &'static [&'static str])> = Vec::new();
    if std::env::var_os("WAYLAND_DISPLAY").is_some() {
        tools.push(("wl-copy", &[]));
    }
    if std::env::var_os("DISPLAY").is_some() {
        tools.push(("xclip", &["-selection", "clipboard"]));
        tools.push(("xsel", &["--clipboard", "--input"]));
    }
    if cfg!(target_os = "macos") {
        tools.push(("pbcopy", &[]));
    }
    tools
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Copies `text` (OSC 52 to standard output when `terminal`, and the first clipboard tool that
/// works); returns what was used, for the status line.
pub fn copy(text: &str, terminal: bool) -> String {
    let mut used = Vec::new();
    if terminal {
        let mut out = std::io::stdout();
        if out
            .write_all(osc52(text).as_bytes())
            .and_then(|_| out.flush())
            .is_ok()
        {
            used.push("OSC 52 to the terminal".to_string());
        }
    }
    for (tool, args) in tools() {
        if !on_path(tool) {
            continue;
        }
        let piped = Command::new(tool)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut stdin) = child.stdin.take() {
                    stdin.write_all(text.as_bytes())?;
                }
                child.wait()
            });
        if piped.is_ok_and(|status| status.success()) {
            used.push(tool.to_string());
            break;
        }
    }
    match used.len() {
        0 => "nothing could take it: no OSC 52 terminal and no clipboard tool".into(),
        1 if terminal => format!("{}; no clipboard tool found", used[0]),
        _ => used.join(" and "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_encodes_the_text_in_base64() {
        assert_eq!(osc52("{\"a\":1}"), "\x1b]52;c;eyJhIjoxfQ==\x07");
    }
}
