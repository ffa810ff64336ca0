//! The built eBPF object against the names in `tcpwatch_common::hooks`: the program attributes
//! in `tcpwatch-ebpf` take string literals, so this is where a mismatch shows before a load.
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};
use tcpwatch_common::hooks::{
    HOOKS, RESET_REASON_CATEGORY, RESET_REASON_PROGRAM, SWEEP_PROGRAM, SWEEP_PROGRAM_NOCOOKIE,
    tracepoint,
};

use super::OBJECT;

/// The section of the function symbol `name` in the object, if there is one.
fn section_of(name: &str) -> Option<String> {
    let file = object::File::parse(OBJECT).unwrap();
    let sym = file.symbols().find(|s| s.name() == Ok(name))?;
    let idx = sym.section_index()?;
    Some(
        file.section_by_index(idx)
            .unwrap()
            .name()
            .unwrap()
            .to_owned(),
    )
}

#[test]
fn object_has_every_hook() {
    for h in HOOKS {
        assert_eq!(
            section_of(h.tp_btf).as_deref(),
            Some(format!("tp_btf/{}", h.tracepoint).as_str()),
            "{h:?}"
        );
        assert_eq!(
            section_of(h.raw_tp).as_deref(),
            Some(format!("raw_tp/{}", h.tracepoint).as_str()),
            "{h:?}"
        );
    }
    assert_eq!(section_of(SWEEP_PROGRAM).as_deref(), Some("iter/tcp"));
    assert_eq!(
        section_of(SWEEP_PROGRAM_NOCOOKIE).as_deref(),
        Some("iter/tcp")
    );
    // aya-ebpf's `#[tracepoint]` names the section `tracepoint`; the loader attaches it to
    // RESET_REASON_CATEGORY:TCP_SEND_RESET.
    assert_eq!(
        section_of(RESET_REASON_PROGRAM).as_deref(),
        Some("tracepoint")
    );
    assert_eq!(
        (RESET_REASON_CATEGORY, tracepoint::TCP_SEND_RESET),
        ("tcp", "tcp_send_reset")
    );
    assert_eq!(section_of("no_such_program"), None);
}
