//! Fuzzing of the config parser: the committed corpus first, then random and mutated
//! inputs. The property: never a panic; every error names a key or a position.
use proptest::prelude::*;

use super::{Config, ConfigError};

const CORPUS: &str = include_str!("../fuzz-corpus/configs.toml.txt");

fn check(text: &str) {
    match Config::from_toml_str(text) {
        Ok(cfg) => assert!(cfg.validate().is_ok(), "accepted an invalid config: {text}"),
        Err(ConfigError::Syntax { line, .. }) => assert!(line >= 1, "{text}"),
        Err(e) => assert!(e.key().is_some_and(|k| !k.is_empty()), "{e} for {text}"),
    }
}

#[test]
fn corpus_never_panics_and_names_the_problem() {
    let docs: Vec<&str> = CORPUS.split("=====\n").collect();
    assert!(docs.len() > 10);
    for doc in docs {
        check(doc);
    }
}

const KEYS: &[&str] = &[
    "[daemon]",
    "[detectors]",
    "[detectors.close_wait]",
    "[detectors.send_queue]",
    "[alertmanager]",
    "listen",
    "sweep_interval_ms",
    "threshold_seconds",
    "fill_fraction",
    "enabled",
    "url",
    "min_chain",
    "bogus",
];
const VALUES: &[&str] = &[
    "1",
    "-1",
    "0",
    "1.5",
    "1e400",
    "\"x\"",
    "true",
    "[1,2]",
    "{a=1}",
    "\"127.0.0.1:1\"",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        check(&text);
    }

    #[test]
    fn key_value_soup_never_panics(
        lines in proptest::collection::vec((0..KEYS.len(), 0..VALUES.len(), any::<bool>()), 0..12)
    ) {
        let text: String = lines
            .iter()
            .map(|&(k, v, header)| {
                if header || KEYS[k].starts_with('[') {
                    format!("{}\n", KEYS[k])
                } else {
                    format!("{} = {}\n", KEYS[k], VALUES[v])
                }
            })
            .collect();
        check(&text);
    }

    #[test]
    fn overrides_never_panic(k in 0..KEYS.len(), v in 0..VALUES.len(), path in "[a-z_.]{0,40}") {
        let mut cfg = Config::default();
        let key = if KEYS[k].starts_with('[') { path } else { format!("daemon.{}", KEYS[k]) };
        let before = cfg.clone();
        if cfg.apply_override(&key, VALUES[v]).is_err() {
            prop_assert_eq!(cfg, before, "a failed override changed nothing");
        }
    }
}
