//! Text from outside (a command's output, a secret's description, an audit entry's
//! fields) made safe to print: no escape sequence reaches the terminal, where it could
//! retitle the window, clear the screen or forge lines.

/// `text` with every control character (C0, DEL, C1) shown as `^X` or `\u{..}`; line
/// feeds and tabs stay when `keep_lines` (multi-line output), else they are shown too (a
/// field must not fake a line of its own).
pub(crate) fn shown(text: &str, keep_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            '\0'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            '\u{80}'..='\u{9f}' => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_show_as_text() {
        let hostile = "ok\u{1b}]0;PWN\u{7}\u{1b}[2J\nfake line\t\u{9b}x\u{7f}";
        assert_eq!(
            shown(hostile, false),
            "ok^[]0;PWN^G^[[2J^Jfake line^I\\u{9b}x^?"
        );
        assert_eq!(
            shown(hostile, true),
            "ok^[]0;PWN^G^[[2J\nfake line\t\\u{9b}x^?"
        );
        assert_eq!(shown("plain é 字", false), "plain é 字");
    }
}
