//! Parsing of a tracepoint's `format` file (tracefs): a field's offset in the record and the
//! names `__print_symbolic` gives to its values. Pure: the text is handed in.

/// Offset and size of `field` in the record (`field:<type> <name>;\toffset:N;\tsize:M;`).
#[must_use]
pub fn field_offset(format: &str, field: &str) -> Option<(u32, u32)> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let num = |key: &str| -> Option<u32> {
            rest.split(';')
                .find_map(|p| p.trim().strip_prefix(key))?
                .trim()
                .parse()
                .ok()
        };
        Some((num("offset:")?, num("size:")?))
    })
}

/// The `{ value, "NAME" }` pairs of `__print_symbolic(REC->field, ...)` in the print format.
#[must_use]
pub fn symbolic_names(format: &str, field: &str) -> Vec<(u32, String)> {
    let start = format!("__print_symbolic(REC->{field},");
    let Some(at) = format.find(&start) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rest = &format[at + start.len()..];
    // Pairs until the closing parenthesis of the call.
    while let Some(open) = rest.find('{') {
        if rest.find(')').is_some_and(|close| close < open) {
            break;
        }
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let pair = &rest[open + 1..open + close];
        if let Some((v, name)) = pair.split_once(',')
            && let Ok(v) = v.trim().parse::<u32>()
        {
            out.push((v, name.trim().trim_matches('"').to_owned()));
        }
        rest = &rest[open + close + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 6.18's `tcp:tcp_send_reset` format (shortened print list).
    const SEND_RESET: &str = "name: tcp_send_reset\nID: 2280\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:enum sk_rst_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr[28];\toffset:32;\tsize:28;\tsigned:0;\n\n\
print fmt: \"skbaddr=%p reason=%s\", REC->skbaddr, REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, \"TCP_ESTABLISHED\" }) : \"UNKNOWN\", __print_symbolic(REC->reason, { 0, \"NOT_SPECIFIED\" }, { 1, \"NO_SOCKET\" }, { 9, \"TCP_TIMEWAIT_SOCKET\" }, { 25, \"MAX\" })\n";

    #[test]
    fn reason_offset_and_names() {
        assert_eq!(field_offset(SEND_RESET, "reason"), Some((28, 4)));
        assert_eq!(field_offset(SEND_RESET, "saddr"), Some((32, 28)));
        assert_eq!(field_offset(SEND_RESET, "skaddr"), Some((16, 8)));
        assert_eq!(field_offset(SEND_RESET, "nope"), None);
        assert_eq!(
            symbolic_names(SEND_RESET, "reason"),
            vec![
                (0, "NOT_SPECIFIED".to_owned()),
                (1, "NO_SOCKET".to_owned()),
                (9, "TCP_TIMEWAIT_SOCKET".to_owned()),
                (25, "MAX".to_owned()),
            ]
        );
        // Symbolic values that are not numbers (TCP_ESTABLISHED) are skipped.
        assert!(symbolic_names(SEND_RESET, "state").is_empty());
        // Kernels before 6.10: no reason field.
        let old = "format:\n\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n";
        assert_eq!(field_offset(old, "reason"), None);
        assert!(symbolic_names(old, "reason").is_empty());
        assert!(symbolic_names("", "reason").is_empty());
        assert_eq!(field_offset("field:int x", "x"), None);
    }
}
